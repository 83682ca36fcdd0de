//! A small fact list written for this crate: cloze prompts with one expected continuation
//! (capitals, chemical element symbols, authors of famous books, official languages), and
//! their tokenization into prompt and answer ids.
//!
//! Every answer starts with a space and every prompt ends without one, so a byte-level BPE
//! tokenizer (SmolLM2's) puts a token boundary exactly between them.

use crate::error::{Error, Result};
use crate::text::Tokenizer;

/// The relation a fact is about (for stratified recall).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum FactCategory {
    /// Country → capital city.
    Capital,
    /// Element → chemical symbol.
    ElementSymbol,
    /// Book → author.
    Author,
    /// Country → official language.
    Language,
}

impl FactCategory {
    /// A short lowercase name for reports.
    pub fn name(self) -> &'static str {
        match self {
            FactCategory::Capital => "capital",
            FactCategory::ElementSymbol => "element symbol",
            FactCategory::Author => "author",
            FactCategory::Language => "language",
        }
    }
}

/// One cloze fact: the model should continue `prompt` with `answer`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fact {
    /// The relation.
    pub category: FactCategory,
    /// The prompt, without a trailing space.
    pub prompt: &'static str,
    /// The expected continuation, with its leading space.
    pub answer: &'static str,
}

const fn fact(category: FactCategory, prompt: &'static str, answer: &'static str) -> Fact {
    Fact {
        category,
        prompt,
        answer,
    }
}

use FactCategory::{Author, Capital, ElementSymbol, Language};

/// The crate's fact list: 20 capitals, 10 element symbols, 10 authors, 8 languages.
pub const FACTS: &[Fact] = &[
    fact(Capital, "The capital of France is", " Paris"),
    fact(Capital, "The capital of Germany is", " Berlin"),
    fact(Capital, "The capital of Italy is", " Rome"),
    fact(Capital, "The capital of Spain is", " Madrid"),
    fact(Capital, "The capital of Japan is", " Tokyo"),
    fact(Capital, "The capital of Russia is", " Moscow"),
    fact(Capital, "The capital of Egypt is", " Cairo"),
    fact(Capital, "The capital of Greece is", " Athens"),
    fact(Capital, "The capital of Portugal is", " Lisbon"),
    fact(Capital, "The capital of Austria is", " Vienna"),
    fact(Capital, "The capital of Poland is", " Warsaw"),
    fact(Capital, "The capital of Ireland is", " Dublin"),
    fact(Capital, "The capital of Norway is", " Oslo"),
    fact(Capital, "The capital of Sweden is", " Stockholm"),
    fact(Capital, "The capital of Finland is", " Helsinki"),
    fact(Capital, "The capital of Hungary is", " Budapest"),
    fact(Capital, "The capital of Canada is", " Ottawa"),
    fact(Capital, "The capital of Kenya is", " Nairobi"),
    fact(Capital, "The capital of Thailand is", " Bangkok"),
    fact(Capital, "The capital of Peru is", " Lima"),
    fact(ElementSymbol, "The chemical symbol of gold is", " Au"),
    fact(ElementSymbol, "The chemical symbol of silver is", " Ag"),
    fact(ElementSymbol, "The chemical symbol of iron is", " Fe"),
    fact(ElementSymbol, "The chemical symbol of sodium is", " Na"),
    fact(ElementSymbol, "The chemical symbol of potassium is", " K"),
    fact(ElementSymbol, "The chemical symbol of lead is", " Pb"),
    fact(ElementSymbol, "The chemical symbol of copper is", " Cu"),
    fact(ElementSymbol, "The chemical symbol of mercury is", " Hg"),
    fact(ElementSymbol, "The chemical symbol of tin is", " Sn"),
    fact(ElementSymbol, "The chemical symbol of helium is", " He"),
    fact(Author, "Hamlet was written by", " William Shakespeare"),
    fact(Author, "Pride and Prejudice was written by", " Jane Austen"),
    fact(Author, "War and Peace was written by", " Leo Tolstoy"),
    fact(Author, "Don Quixote was written by", " Miguel de Cervantes"),
    fact(
        Author,
        "Nineteen Eighty-Four was written by",
        " George Orwell",
    ),
    fact(
        Author,
        "On the Origin of Species was written by",
        " Charles Darwin",
    ),
    fact(Author, "Moby-Dick was written by", " Herman Melville"),
    fact(
        Author,
        "Great Expectations was written by",
        " Charles Dickens",
    ),
    fact(
        Author,
        "Crime and Punishment was written by",
        " Fyodor Dostoevsky",
    ),
    fact(
        Author,
        "The Divine Comedy was written by",
        " Dante Alighieri",
    ),
    fact(
        Language,
        "The official language of Brazil is",
        " Portuguese",
    ),
    fact(Language, "The official language of Mexico is", " Spanish"),
    fact(Language, "The official language of Egypt is", " Arabic"),
    fact(Language, "The official language of Japan is", " Japanese"),
    fact(Language, "The official language of Germany is", " German"),
    fact(
        Language,
        "The official language of the Netherlands is",
        " Dutch",
    ),
    fact(Language, "The official language of Greece is", " Greek"),
    fact(Language, "The official language of Sweden is", " Swedish"),
];

/// A fact as token ids: the prompt, and the answer that should follow it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FactPrompt {
    /// Prompt ids (at least one).
    pub prompt: Vec<u32>,
    /// Answer ids (at least one); the first is the token the interpretability views explain.
    pub answer: Vec<u32>,
}

impl FactPrompt {
    /// A prompt and answer given as ids; both must be non-empty.
    pub fn new(prompt: Vec<u32>, answer: Vec<u32>) -> Result<Self> {
        for (what, ids) in [("fact prompt ids", &prompt), ("fact answer ids", &answer)] {
            if ids.is_empty() {
                return Err(Error::EmptyTensor {
                    what,
                    shape: vec![0],
                });
            }
        }
        Ok(FactPrompt { prompt, answer })
    }

    /// The first answer token.
    pub fn answer_token(&self) -> u32 {
        self.answer[0]
    }
}

impl Fact {
    /// The prompt and answer ids under `tokenizer`: the answer is what tokenizing
    /// `prompt + answer` adds after the prompt's own tokens. Errors when the two do not share
    /// that prefix (the answer would merge with the end of the prompt).
    pub fn tokenize(&self, tokenizer: &Tokenizer) -> Result<FactPrompt> {
        let prompt = tokenizer.encode(self.prompt)?;
        let full = tokenizer.encode(&format!("{}{}", self.prompt, self.answer))?;
        if full.len() <= prompt.len() || full[..prompt.len()] != prompt[..] {
            return Err(Error::Tokenizer(format!(
                "the answer {:?} does not start on a token boundary after {:?}",
                self.answer, self.prompt
            )));
        }
        FactPrompt::new(prompt.clone(), full[prompt.len()..].to_vec())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn facts_are_well_formed_and_distinct() {
        assert!(FACTS.len() >= 40);
        for f in FACTS {
            assert!(
                f.answer.starts_with(' ') && !f.answer.ends_with(' '),
                "{f:?}"
            );
            assert!(!f.prompt.ends_with(' ') && !f.prompt.is_empty(), "{f:?}");
        }
        let mut prompts: Vec<&str> = FACTS.iter().map(|f| f.prompt).collect();
        prompts.sort_unstable();
        prompts.dedup();
        assert_eq!(prompts.len(), FACTS.len());
        assert!(FactPrompt::new(vec![], vec![1]).is_err());
    }
}

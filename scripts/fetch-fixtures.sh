#!/usr/bin/env bash
# Download the real data sets quantlens' tests and examples use, from the package registries
# that ship them, verify every file's SHA-256, and unpack them into the fixture cache:
#   ${QUANTLENS_FIXTURES:-<repo>/target/fixtures}/{sklearn,b3db}/...
# Idempotent: files already present with the right hash are not fetched again.
set -euo pipefail

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

if verified "${sklearn_files[@]}"; then
  echo "fetch-fixtures: scikit-learn tables present in $dest/sklearn"
else
  echo "fetch-fixtures: downloading scikit-learn 1.5.2 wheel (tables only are kept)"
  "$python" -m pip download --quiet --no-deps --only-binary=:all: scikit-learn==1.5.2 -d "$work"
  install_from_wheel "$(ls "$work"/scikit_learn-1.5.2-*.whl)" sklearn/datasets/data sklearn "${sklearn_files[@]}"
fi

if verified "${b3db_files[@]}"; then
  echo "fetch-fixtures: B3DB present in $dest/b3db"
else
  echo "fetch-fixtures: downloading qc-b3db 1.1.1 wheel (78 MB)"
  "$python" -m pip download --quiet --no-deps qc-b3db==1.1.1 -d "$work"
  wheel="$work/qc_b3db-1.1.1-py3-none-any.whl"
  got="$(sha256sum "$wheel" | cut -d' ' -f1)"
  if [[ "$got" != "$B3DB_WHEEL_SHA" ]]; then
    echo "fetch-fixtures: $wheel has SHA-256 $got, expected $B3DB_WHEEL_SHA" >&2
    exit 1
  fi
  install_from_wheel "$wheel" B3DB b3db "${b3db_files[@]}"
fi
echo "fetch-fixtures: all fixtures verified in $dest"

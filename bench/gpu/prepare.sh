#!/usr/bin/env bash
# Build .gpu/ (git-ignored): what bench/gpu/check.sh needs on a GPU machine that can download
# nothing. The device tool carries at most 64 MiB per call, so the embedded 98 MB GGUF travels
# in two parts, over two calls (see bench/gpu/README.md).
#   bash bench/gpu/prepare.sh            # from the repository root, with star's venv active
set -euo pipefail
cd "$(dirname "$0")/../.."
DATA=${DATA:-../shared/datasets/GSM8K}
rm -rf .gpu && mkdir -p .gpu/whl .gpu/GSM8K
# The GPU image has torch, accelerate, typer, rich, matplotlib, yaml, tqdm; these are missing there
# or pinned to the versions star is tested with (Python 3.12 wheels).
python -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
    -d .gpu/whl pydantic==2.14.4 pydantic-core==2.50.5 annotated-types==0.8.0 typing-inspection==0.4.5 \
    gguf==0.19.0 transformers==5.24.0 peft==0.21.2
gguf=$(python -c "from star.engine.modeling import embedded_gguf_path; print(embedded_gguf_path())")
split -b 58M "$gguf" .gpu/model.part-   # .gpu/model.part-aa (call 1), .gpu/model.part-ab (call 2)
sha256sum < "$gguf" | cut -d' ' -f1 > .gpu/model.sha256
if [ -f "$DATA/train.jsonl" ]; then
    head -n 1000 "$DATA/train.jsonl" > .gpu/GSM8K/train.jsonl
    head -n 300 "$DATA/test.jsonl" > .gpu/GSM8K/test.jsonl
else
    echo "no GSM8K at $DATA: the GSM8K steps will be skipped there" >&2
fi
du -sh .gpu/* .gpu/whl

#!/usr/bin/env bash
# Download the wheels the GPU machine lacks into three git-ignored folders, so that the
# working tree plus any two of them stays under the device's 64 MiB carry limit:
#   .whl      trl, datasets and their small dependencies (the TRL + PEFT trainer)
#   .whl_gpu  unsloth and its dependencies, bitsandbytes stripped to its CPU and CUDA 13 libraries
#   .whl_app  what the agent itself needs (langgraph, sqlalchemy, alembic, bm25s, ...)
# The device image already has torch, transformers, peft, accelerate, numpy, pyarrow,
# pandas, httpx, rich, typer. Run from the repository
# root on a machine that reaches the package registry. Install on the device with
#   python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
#       --target /tmp/site .whl/*.whl .whl_app/*.whl && export PYTHONPATH=/tmp/site:$PWD
set -euo pipefail

platforms=(manylinux_2_28_x86_64 manylinux_2_27_x86_64 manylinux_2_24_x86_64 manylinux_2_17_x86_64
           manylinux2014_x86_64 manylinux1_x86_64 any)
fetch() {  # fetch DIR NAME==VERSION...
    local dir=$1; shift
    mkdir -p "$dir"
    python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 \
        --implementation cp "${platforms[@]/#/--platform=}" -d "$dir" "$@" 2>&1 | { grep -v '^WARNING: Location' || true; }  # pip's failure still stops the script
}

fetch .whl trl==1.15.0 datasets==4.8.5 dill==0.4.1 multiprocess==0.70.19 \
    pydantic==2.14.3 pydantic-core==2.50.4 typing-inspection==0.4.5 annotated-types==0.8.0

fetch .whl_gpu unsloth==2026.10.9 unsloth_zoo==2026.10.9 torchao==0.18.0 cut_cross_entropy==25.1.1 \
    tyro==1.0.16 msgspec==0.22.0 hf_transfer==0.1.9 structlog==26.1.0 json5==0.17.3 \
    nest-asyncio==1.6.0 docstring-parser==0.18.0 typeguard==4.6.0 shtab==1.13.0 bitsandbytes==0.50.2

fetch .whl_app langgraph==1.2.22 langgraph-checkpoint langgraph-prebuilt langgraph-sdk \
    langchain-core==1.8.1 langchain-protocol langsmith==0.14.17 uuid-utils==0.19.0 httpx2==2.16.2 httpcore2==2.16.2 truststore jsonpatch jsonpointer tenacity \
    orjson ormsgpack requests-toolbelt zstandard sqlalchemy==2.1.9 greenlet alembic mako \
    bm25s==0.3.16 distro sniffio websockets gguf==0.19.0  # gguf: transformers reads SmolLM2's GGUF with it

# bitsandbytes ships a library for every CUDA and ROCm version (~40 MB); keep CUDA 13 only.
bnb=$(ls .whl_gpu/bitsandbytes-*.whl)
tmp=$(mktemp -d)
unzip -q "$bnb" -d "$tmp"
find "$tmp" -name 'libbitsandbytes_*' ! -name '*cpu*' ! -name '*cuda13*' -delete
# RECORD must list exactly the files left, or pip refuses the wheel.
record=$(ls "$tmp"/bitsandbytes-*.dist-info/RECORD)
awk -F, -v d="$tmp" 'index($1, "libbitsandbytes_") == 0 || system("test -e \"" d "/" $1 "\"") == 0' \
    "$record" > "$record.new"
mv "$record.new" "$record"
rm "$bnb"; (cd "$tmp" && zip -q -r "$OLDPWD/$bnb" .); rm -rf "$tmp"

du -sh .whl .whl_gpu .whl_app

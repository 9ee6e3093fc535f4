#!/usr/bin/env bash
# Builds the harness, instruments GptSharp.dll with SharpFuzz and runs AFL++ on one target for a while.
# usage: fuzz/run.sh <pth|safetensors|tf-index|snappy|config|tokens|token-shard|jsonl|parquet> [seconds=600] [work dir=/tmp/gptsharp-afl]
set -euo pipefail
target=${1:?target}; seconds=${2:-600}; work=${3:-/tmp/gptsharp-afl}
here=$(cd "$(dirname "$0")" && pwd)
export PATH="$PATH:$HOME/.dotnet/tools"
command -v sharpfuzz >/dev/null || dotnet tool install --global SharpFuzz.CommandLine --version 2.3.0
if [ ! -f "$work/bin/.instrumented" ]; then
  dotnet build "$here/GptSharp.Fuzz" -c Release -o "$work/plain" -v q -nologo
  # Seeds come from the uninstrumented copy: instrumented code only runs under afl-fuzz.
  [ -d "$work/seeds" ] || dotnet "$work/plain/GptSharp.Fuzz.dll" seeds "$work/seeds"
  cp -r "$work/plain" "$work/bin"
  sharpfuzz "$work/bin/GptSharp.dll"
  touch "$work/bin/.instrumented"
fi
export AFL_SKIP_BIN_CHECK=1 AFL_NO_UI=1 AFL_I_DONT_CARE_ABOUT_MISSING_CRASHES=1 AFL_SKIP_CPUFREQ=1
timeout --preserve-status "$seconds" afl-fuzz -i "$work/seeds/$target" -o "$work/out-$target" -t 5000 -m none -- "$work/bin/GptSharp.Fuzz" "$target" || true
grep -E "execs_done|execs_per_sec|saved_crashes|saved_hangs|corpus_count" "$work/out-$target/default/fuzzer_stats" || true

// libFuzzer target: the text tables users hand mm-train and mm-eval. CSV (RFC 4180
// quoting) as manifests, with each split and as an exclude list, and as predictions;
// JSON and JSONL predictions (nlohmann_json); the join of a manifest with predictions.
// Any outcome but tables or an mm::Error is a finding. The body is in
// fuzz_tables_body.h (the doctest suite replays regressions through it).
//
// fuzz-sources: lib/io/csv.cpp lib/data/dataset.cpp lib/data/dataset_npz.cpp lib/data/npz.cpp lib/data/image.cpp lib/data/file_kind.cpp lib/io/zip_reader.cpp lib/io/file_bytes.cpp lib/eval/predictions_file.cpp
// fuzz-libs: -lz
// fuzz-seeds: fuzz/seeds/tables
// fuzz-runs: 50000
#include "fuzz_tables_body.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  fuzz_one_table(data, size);
  return 0;
}

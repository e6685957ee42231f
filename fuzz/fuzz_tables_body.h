// The text tables fuzz target's body, shared by fuzz/fuzz_tables.cpp (libFuzzer) and
// test/test_fuzz_regressions.cpp (replays the seeds and fuzz/regressions/fuzz_tables/
// in the doctest suite): mm-train's and mm-eval's CSV manifests (path,label[,split])
// with each split and an exclude list, mm-eval's predictions files (CSV, JSON, JSONL)
// and the join of a manifest with predictions. The readers open paths, so each input is
// written to per-process temporary files, one name per format.
#pragma once
#include <unistd.h>

#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <filesystem>
#include <string>

#include "data/dataset.h"
#include "eval/predictions_file.h"
#include "io/csv.h"

// Returns normally for tables or an mm::Error; anything else is a finding.
inline void fuzz_one_table(const uint8_t* data, size_t size) {
  static const std::string dir = [] {
    const std::string d = "/tmp/mm_fuzz_tables_" + std::to_string(getpid());
    std::filesystem::create_directories(d);
    return d;
  }();
  const std::string text(reinterpret_cast<const char*>(data), size);
  for (const char* name : {"/in.csv", "/in.json", "/in.jsonl", "/exclude.txt"})
    if (FILE* f = std::fopen((dir + name).c_str(), "wb")) {
      std::fwrite(data, 1, size, f);
      std::fclose(f);
    }
  try {
    const mm::CsvTable t = mm::parse_csv(text, "fuzz input");
    (void)t.column("path");
    if (!t.rows.empty()) (void)t.where(t.rows.size() - 1);
  } catch (const mm::Error&) {
  }
  mm::Dataset labels;
  bool have_labels = false;
  for (const char* split : {"", "train", "val", "test"}) {
    try {
      mm::DatasetOptions options;
      options.split = split;
      labels = mm::open_csv_manifest(dir + "/in.csv", options);
      have_labels = have_labels || *split == 0;
    } catch (const mm::Error&) {
    }
  }
  try {  // the input as an exclude list, against a one-row manifest beside it
    mm::DatasetOptions options;
    options.exclude_file = dir + "/exclude.txt";
    if (FILE* f = std::fopen((dir + "/one.csv").c_str(), "wb")) {
      std::fputs("path,label\nin.csv,a\n", f);
      std::fclose(f);
    }
    (void)mm::open_csv_manifest(dir + "/one.csv", options);
  } catch (const mm::Error&) {
  }
  for (const char* name : {"/in.csv", "/in.json", "/in.jsonl"}) {
    try {
      const mm::PredictionsFile predictions = mm::read_predictions(dir + name);
      if (have_labels) (void)mm::join_predictions(predictions, labels, {}, true);
    } catch (const mm::Error&) {
    }
  }
}

#pragma once
// The run directory's human-readable files: metrics.jsonl (one line per
// epoch) and curves.svg (loss, accuracy and AUC by epoch, redrawn each epoch).
#include <string>
#include <vector>

#include "train/trainer.h"

namespace mm {

class CommitQueue;  // io/durable_file.h

std::string epoch_record_json(const EpochRecord& r);  // one line, no newline
EpochRecord epoch_record_from_json(const std::string& line);

// The records of a metrics.jsonl (missing file: none). A torn last line (a
// kill mid-write) is dropped.
std::vector<EpochRecord> read_metrics_file(const std::string& path);
// Rewrites the whole file (durable_replace).
void write_metrics_file(const std::string& path, const std::vector<EpochRecord>& records, CommitQueue* later = nullptr);

// Two panels: train/val loss; val accuracy, balanced accuracy and AUC (and train accuracy).
std::string training_curves_svg(const std::vector<EpochRecord>& records);

}  // namespace mm

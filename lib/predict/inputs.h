#pragma once
// What mm-predict classifies: the files named on the command line, in list
// files, and found under folders, in one deterministic order, and the share of
// them that one shard of a cluster job takes.
//
// Nothing here reads file contents: whether a file is an image is decided when
// it is decoded (lib/predict/pipeline.h), so that listing a large archive costs
// one directory walk and every shard sees the same list.
#include <cstdint>
#include <string>
#include <vector>

namespace mm {

struct InputFile {
  std::string path;  // as the user gave it or as found under a folder (lexically normalised)
  // True when found by walking a folder: a file whose content is no image format
  // is then skipped quietly (notes, thumbnails, lock files), while a file named
  // explicitly is reported as a failure.
  bool found_in_folder = false;
};

struct InputListing {
  std::vector<InputFile> files;  // sorted by path (byte order), without duplicates
  std::vector<std::string> hidden_skipped;  // hidden files and folders under folders ('.' first)
};

// paths: files or folders (walked recursively, following links to folders once
// each). list_files: text files naming one path per line ('-' is stdin); blank
// lines and lines starting with '#' are ignored; relative entries are relative to
// the list file's folder (the working directory for stdin).
// In folders, the image file of an Analyze/NIfTI pair (x.img beside x.hdr, or
// their .gz forms) is left out: reading x.hdr reads the pair.
// Throws mm::Error naming the path when a path or list file does not exist.
InputListing find_inputs(const std::vector<std::string>& paths, const std::vector<std::string>& list_files);

// Shard `index` of `count` (1-based, as `split -n K/N`): a contiguous run of the
// sorted files, so that the outputs of shards 1..N concatenated in order equal
// one run over all files. Sizes differ by at most one file.
struct Shard {
  int64_t index = 1, count = 1;
};
// Parses "i/N" with 1 <= i <= N; throws mm::Error explaining the form otherwise.
Shard parse_shard(const std::string& text);
std::vector<InputFile> select_shard(const std::vector<InputFile>& files, Shard shard);

// The deepest folder holding every path (absolute, normalised): where
// --save-preprocessed and --saliency mirror the inputs' layout from.
std::string common_folder(const std::vector<InputFile>& files);

// Where an output derived from one image goes, relative to an output folder:
// the input's path relative to `root`, with ".frame0003" / ".slice0042" for
// one frame or slice of a file, and `extension` appended:
//   root /data, /data/a/b.dcm, frame 3, ".npy" -> "a/b.dcm.frame0003.npy"
std::string derived_file_name(const std::string& root, const std::string& input_path, int64_t frame, int64_t slice,
                              const std::string& extension);

}  // namespace mm

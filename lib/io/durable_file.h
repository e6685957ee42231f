#pragma once
// Files that survive a kill or a crash at any moment: written beside their
// final name, fsync'd, renamed over it, and the folder fsync'd, so a reader
// sees the old version or the new one, never a torn file. mm-train's run files
// and mm-serve's received instances, records and reports all go through here.
// POSIX only (Linux, macOS).
#include <string>

namespace mm {

// Makes the folder (and its parents); throws mm::Error naming it when that fails.
void make_folder(const std::string& path);
// fsync of a file or a folder (a folder: its entries, so renames survive a crash).
void sync_path(const std::string& path);
// rename(2) then fsync of the destination's folder (and the source's when another one).
void durable_rename(const std::string& from, const std::string& to);
// A finished temporary file takes its final name: fsync of tmp, then durable_rename.
void durable_commit(const std::string& tmp, const std::string& path);
// Appends bytes to a file (creating it) with one write, then fsync.
void durable_append(const std::string& path, const std::string& bytes);
// Writes a whole file through "<path>.tmp" and durable_commit.
void durable_replace(const std::string& path, const std::string& text);

}  // namespace mm

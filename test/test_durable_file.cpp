// CommitQueue: durable commits run later, on a thread, in order; a failure
// surfaces at wait() naming the file.
#include <doctest/doctest.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>

#include "core/error.h"
#include "io/durable_file.h"

namespace fs = std::filesystem;

namespace {

std::string read_text(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  std::stringstream s;
  s << in.rdbuf();
  return s.str();
}

struct ScratchFolder {
  fs::path path = fs::temp_directory_path() / ("mm-test-durable-" + std::to_string(::getpid()));
  ScratchFolder() { fs::create_directories(path); }
  ~ScratchFolder() { fs::remove_all(path); }
};

}  // namespace

TEST_CASE("durable_replace through a CommitQueue: the old version until the queue has run, the new one after") {
  ScratchFolder dir;
  const std::string a = (dir.path / "metrics.jsonl").string(), b = (dir.path / "curves.svg").string();
  mm::durable_replace(a, "epoch 1\n");
  mm::CommitQueue q;
  mm::durable_replace(a, "epoch 1\nepoch 2\n", &q);
  mm::durable_replace(b, "<svg/>", &q);
  CHECK(read_text(a) == "epoch 1\n");  // nothing committed before start()
  CHECK_FALSE(fs::exists(b));
  q.start();
  q.wait();
  CHECK(read_text(a) == "epoch 1\nepoch 2\n");
  CHECK(read_text(b) == "<svg/>");
  CHECK_FALSE(fs::exists(a + ".tmp"));

  // Commits run in the order added: the later version of a file wins.
  mm::durable_replace(a, "first", &q);
  q.start();
  q.wait();
  mm::durable_replace(a, "second", &q);
  q.start();
  q.wait();
  CHECK(read_text(a) == "second");
}

TEST_CASE("CommitQueue: commits added but never started run when the queue goes away") {
  ScratchFolder dir;
  const std::string a = (dir.path / "last.safetensors").string();
  mm::durable_replace(a, "epoch 1");
  {
    mm::CommitQueue q;
    mm::durable_replace(a, "epoch 2", &q);  // then, say, the next write throws before start()
  }
  CHECK(read_text(a) == "epoch 2");
  CHECK_FALSE(fs::exists(a + ".tmp"));
}

TEST_CASE("CommitQueue: a commit that fails is reported by wait(), naming the file") {
  ScratchFolder dir;
  mm::CommitQueue q;
  q.add((dir.path / "never-written.partial").string(), (dir.path / "model.safetensors").string());
  q.start();
  try {
    q.wait();
    FAIL("wait() did not throw");
  } catch (const mm::Error& e) {
    CHECK(std::string(e.what()).find("never-written.partial") != std::string::npos);
  }
  q.wait();  // reported once
}

TEST_CASE("CommitQueue: a commit that writes its file on the queue's thread; a failed write leaves the old version") {
  ScratchFolder dir;
  const std::string a = (dir.path / "best.safetensors").string();
  mm::durable_replace(a, "epoch 1");
  mm::CommitQueue q;
  const std::string snapshot = "epoch 2";  // what the caller copied before the next epoch changes it
  q.add(a + ".partial", a, [tmp = a + ".partial", snapshot] { std::ofstream(tmp, std::ios::binary) << snapshot; });
  CHECK(read_text(a) == "epoch 1");
  CHECK_FALSE(fs::exists(a + ".partial"));  // not even written before start()
  q.start();
  q.wait();
  CHECK(read_text(a) == "epoch 2");
  CHECK_FALSE(fs::exists(a + ".partial"));

  q.add(a + ".partial", a, [] { throw mm::Error("best.safetensors.partial: disk full"); });
  q.start();
  CHECK_THROWS_WITH_AS(q.wait(), doctest::Contains("best.safetensors.partial"), mm::Error);
  CHECK(read_text(a) == "epoch 2");
}

// The mm-train binary: a run killed with SIGKILL mid-epoch resumes from its
// last saved state and ends bit-identical to an uninterrupted run.
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstring>
#include <thread>

#include "eval_test_util.h"
#include "io/safetensors.h"
#include "train/run_files.h"

using mm::test::run_command;
using mm::test::ScratchDir;

namespace {

const std::string kTrain = std::string(MM_BINARY_DIR) + "/mm-train";

std::vector<std::string> train_args(const std::string& out) {
  return {kTrain, "--data", mm::test::shared_data_dir() + "/medmnist/breastmnist.npz", "--out", out,
          "--dims", "8,16,32,64", "--depths", "1,1,1,1", "--image-size", "32", "--epochs", "2",
          "--batch-size", "32", "--lr", "2e-3", "--seed", "3", "--threads", "2", "--save-every", "3", "-q"};
}

std::string shell_line(const std::vector<std::string>& args) {
  std::string s;
  for (const std::string& a : args) s += "'" + a + "' ";
  return s + "2>/dev/null";
}

}  // namespace

TEST_CASE("mm-train --labels names the classes of index-labelled data in the model it writes") {
  if (mm::test::shared_data_dir().empty()) return;
  ScratchDir dir;
  const std::string out = dir.path() + "/named";
  std::vector<std::string> args = train_args(out);
  args[std::find(args.begin(), args.end(), "--epochs") - args.begin() + 1] = "1";
  args.insert(args.end(), {"--labels", "malignant,normal_benign"});
  REQUIRE(run_command(shell_line(args)) == 0);
  const mm::SafetensorsFile model = mm::read_safetensors(out + "/best.safetensors");
  CHECK(model.metadata.at("class_names") == R"(["malignant","normal_benign"])");
  args.back() = "malignant,normal,benign";
  args[4] = dir.path() + "/three";
  CHECK(run_command(shell_line(args)) == 2);  // refused: BreastMNIST has two classes
}

TEST_CASE("mm-train killed with SIGKILL mid-epoch resumes to the same weights as an uninterrupted run") {
  if (mm::test::shared_data_dir().empty()) return;
  ScratchDir dir;
  const std::string full = dir.path() + "/full", killed = dir.path() + "/killed";
  REQUIRE(run_command(shell_line(train_args(full))) == 0);

  const std::vector<std::string> args = train_args(killed);
  const pid_t pid = fork();
  REQUIRE(pid >= 0);
  if (pid == 0) {
    std::vector<char*> argv;
    for (const std::string& a : args) argv.push_back(const_cast<char*>(a.c_str()));
    argv.push_back(nullptr);
    freopen("/dev/null", "w", stderr);
    execv(argv[0], argv.data());
    _exit(127);
  }
  // Kill it as soon as a mid-epoch state exists (the first comes after 3 steps).
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(120);
  while (!std::filesystem::exists(killed + "/state.safetensors") && std::chrono::steady_clock::now() < deadline)
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  kill(pid, SIGKILL);
  int status = 0;
  waitpid(pid, &status, 0);
  REQUIRE(WIFSIGNALED(status));
  REQUIRE(std::filesystem::exists(killed + "/state.safetensors"));
  CHECK_NOTHROW(mm::read_safetensors(killed + "/state.safetensors"));  // never torn

  REQUIRE(run_command("'" + kTrain + "' --resume '" + killed + "' -q 2>/dev/null") == 0);
  const auto a = mm::read_metrics_file(full + "/metrics.jsonl"), b = mm::read_metrics_file(killed + "/metrics.jsonl");
  REQUIRE(a.size() == 2);
  REQUIRE(b.size() == 2);
  for (size_t i = 0; i < 2; ++i) {
    CHECK(a[i].train_loss == b[i].train_loss);
    CHECK(a[i].val_auc == b[i].val_auc);
  }
  const mm::SafetensorsFile fa = mm::read_safetensors(full + "/last.safetensors");
  const mm::SafetensorsFile fb = mm::read_safetensors(killed + "/last.safetensors");
  for (const auto& [name, t] : fa.tensors) {
    CAPTURE(name);
    CHECK(std::memcmp(t.data(), fb.at(name).data(), t.nbytes()) == 0);
  }
  // Resuming a finished run does nothing more and succeeds; a missing state is an error.
  CHECK(run_command("'" + kTrain + "' --resume '" + killed + "' -q 2>/dev/null") == 0);
  CHECK(run_command("'" + kTrain + "' --resume '" + dir.path() + "/none' -q 2>/dev/null") == 1);
}

#pragma once
// mm-serve as a library call: a DICOM C-STORE SCP that classifies what it
// receives (docs/mm-serve.md). apps/mm-serve.cpp only parses flags into ServeCommand.
//
// Threads: the listener (the calling thread) accepts associations, each run on
// a thread of its own (lib/serve/association_listener.h); one classifier
// thread works from the incoming folder (lib/serve/classify_worker.h); one
// thread waits for SIGTERM/SIGINT.
#include <cstdint>
#include <string>
#include <vector>

#include "predict/pipeline.h"

namespace mm {

struct ServeCommand {
  std::string ae_title = "MM-SERVE";
  int port = 11112;  // 0: a free port (written to the status file and the log)
  std::string bind = "127.0.0.1";
  std::vector<std::string> allow;  // calling AE titles; empty: any
  int max_associations = 8;
  std::string model, out, incoming;  // incoming: default <out>/incoming
  std::string device = "auto", precision = "fp32";
  int64_t batch_size = 16;
  int threads = 0;
  double series_timeout = 0;  // seconds a series stays idle before its SR is written; 0: no SRs
  std::string forward_to;      // AE@host:port: C-STORE the series reports (and saliency captures) there
  bool saliency_sc = false;    // a saliency Secondary Capture per classified image, in <out>/saliency
  bool draft = false;          // JPEG and JPEG 2000 decoded at a reduced size no smaller than the model's input
  std::string log_level;  // fatal | error | warn | info | debug | trace ("" : warn, DCMTK's default)
};

// Exit codes (docs/mm-serve.md).
enum ServeExitCode : int {
  kServeStopped = 0,  // stopped by SIGTERM/SIGINT after finishing the work in flight
  kServeFatal = 1,    // could not start (model, folders, address) or a folder became unwritable
  kServeUsage = 2,    // bad command line
};

// Call first thing in main(), before reexec_with_best_blas_kernels. Unless the
// user set OMP_WAIT_POLICY, re-executes the program with it "passive" (libgomp
// reads it when it loads): a server idles between batches, and OpenMP workers
// spinning there starve the association and decoding threads. Measured on this
// 2-core machine under load: a backlog of 200 CT instances classified in 18.6 s
// with spinning waits, 0.8 s with passive ones. On failure it simply returns.
void reexec_with_passive_openmp_waits(char** argv);

// Sets OFLog's level for our lines and DCMTK's; throws mm::Error for an unknown name.
void configure_serve_logging(const std::string& level);

// Checks what can be checked before anything starts (a usage error):
// throws mm::Error explaining it.
void check_serve_command(const ServeCommand& command);

// Runs until SIGTERM or SIGINT; returns kServeStopped then. Throws mm::Error
// (or std::bad_alloc) for a fatal error: the caller maps it to kServeFatal.
int run_serve(const ServeCommand& command, const ImagesReader& reader);

}  // namespace mm

#include "serve/serve.h"

#include <omp.h>
#include <pthread.h>
#include <signal.h>
#include <stdlib.h>
#include <unistd.h>

#include <cstdlib>

#include <atomic>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <exception>
#include <memory>
#include <thread>

#include "core/error.h"
#include "model/default_model.h"
#include "model/model_file.h"
#include "predict/classifier.h"
#include "serve/association_listener.h"
#include "serve/classify_worker.h"
#include "serve/durable_files.h"
#include "serve/forwarder.h"
#include "serve/serve_log.h"

namespace mm {

using serve::serve_logger;

void configure_serve_logging(const std::string& level) {
  static const std::pair<const char*, OFLogger::LogLevel> levels[] = {
      {"fatal", OFLogger::FATAL_LOG_LEVEL}, {"error", OFLogger::ERROR_LOG_LEVEL},
      {"warn", OFLogger::WARN_LOG_LEVEL},   {"info", OFLogger::INFO_LOG_LEVEL},
      {"debug", OFLogger::DEBUG_LOG_LEVEL}, {"trace", OFLogger::TRACE_LOG_LEVEL}};
  for (const auto& [name, value] : levels)
    if (level == name || (level.empty() && value == OFLogger::WARN_LOG_LEVEL)) {
      OFLog::configure(value);
      // Explicit levels on our logger and dcmnet's: the DICOM reader sets the
      // root logger to FATAL when it first runs (lib/imaging/dicom_reader.cpp,
      // to keep dcmdata quiet about files it reports itself), which would
      // otherwise silence these too.
      serve_logger().setLogLevel(value);
      OFLog::getLogger("dcmtk.dcmnet").setLogLevel(value);
      return;
    }
  throw Error("unknown log level '" + level + "' (fatal, error, warn, info, debug or trace)");
}

void reexec_with_passive_openmp_waits(char** argv) {
  if (std::getenv("OMP_WAIT_POLICY")) return;  // the user's choice, or we already re-executed
  ::setenv("OMP_WAIT_POLICY", "passive", 1);
  ::execv("/proc/self/exe", argv);
}

namespace {

// The model as a series report names it: the file's name, a digest of its
// bytes (FNV-1a, 64 bits) that tells versions apart, classes and input size.
std::string model_identity(const std::string& path, const ModelMeta& meta) {
  std::ifstream in(path, std::ios::binary);
  uint64_t hash = 1469598103934665603ull;
  char buffer[1 << 16];
  while (in.read(buffer, sizeof buffer) || in.gcount() > 0)
    for (std::streamsize i = 0; i < in.gcount(); ++i) hash = (hash ^ uint8_t(buffer[i])) * 1099511628211ull;
  char digest[17];
  std::snprintf(digest, sizeof digest, "%016llx", (unsigned long long)hash);
  return std::filesystem::path(path).filename().string() + " (fnv1a64 " + digest + ", " +
         std::to_string(meta.config.num_classes) + " classes, " + std::to_string(meta.preprocess.input_size) +
         " px)";
}

// SIGTERM/SIGINT are blocked in every thread and taken here, so no handler runs
// inside dcmnet or the model.
class StopSignals {
 public:
  StopSignals() {
    sigemptyset(&set_);
    sigaddset(&set_, SIGTERM);
    sigaddset(&set_, SIGINT);
    pthread_sigmask(SIG_BLOCK, &set_, &previous_);
    waiter_ = std::thread([this] {
      const timespec poll{0, 200 * 1000 * 1000};
      while (!finished_) {
        const int sig = sigtimedwait(&set_, nullptr, &poll);
        if ((sig == SIGTERM || sig == SIGINT) && requested) {
          OFLOG_WARN(serve_logger(), (sig == SIGTERM ? "SIGTERM" : "SIGINT")
                                         << " again: stopping after the current round; what waits in incoming is "
                                            "classified at the next start");
          urgent = true;
        } else if (sig == SIGTERM || sig == SIGINT) {
          OFLOG_WARN(serve_logger(), (sig == SIGTERM ? "SIGTERM" : "SIGINT")
                                         << ": no new associations; finishing the work in flight");
          requested = true;
        }
      }
    });
  }
  ~StopSignals() {
    finished_ = true;
    waiter_.join();
    pthread_sigmask(SIG_SETMASK, &previous_, nullptr);
  }
  std::atomic<bool> requested{false};  // the first signal: stop receiving, finish the work
  std::atomic<bool> urgent{false};     // a second one: stop classifying after the current round

 private:
  sigset_t set_, previous_;
  std::atomic<bool> finished_{false};
  std::thread waiter_;
};

}  // namespace

void check_serve_command(const ServeCommand& a) {
  MM_CHECK(!a.out.empty(), "give --out FOLDER");
  MM_CHECK(a.max_associations >= 1, "--max-associations must be at least 1");
  MM_CHECK(a.series_timeout >= 0, "--series-timeout must not be negative");
  if (!a.forward_to.empty()) {
    serve::parse_forward_target(a.forward_to);
    MM_CHECK(a.series_timeout > 0 || a.saliency_sc,
             "--forward-to sends the series reports and saliency captures: give --series-timeout or --saliency-sc too");
  }
}

int run_serve(const ServeCommand& a, const ImagesReader& reader) {
  check_serve_command(a);
  serve::WorkerFolders folders;
  folders.incoming = a.incoming.empty() ? a.out + "/incoming" : a.incoming;
  folders.done = a.out + "/done";
  folders.records = a.out + "/records.jsonl";
  folders.status = a.out + "/status.json";
  const std::string reports = a.out + "/reports";
  for (const std::string& f : {a.out, folders.incoming, folders.done}) make_folder(f);
  if (a.series_timeout > 0) make_folder(reports);
  serve::FolderLock lock(a.out);
  if (const int stale = serve::remove_with_prefix(folders.incoming, serve::kTemporaryPrefix))
    OFLOG_WARN(serve_logger(), "removed " << stale << " partly received files left by a crash (their senders got no "
                                                        "success status)");

  const int threads = a.threads > 0 ? a.threads : std::max(1, int(std::thread::hardware_concurrency()));
  omp_set_num_threads(threads);
  const std::string model_path = a.model.empty() ? find_default_model() : a.model;  // as mm-predict
  LoadedModel loaded = load_model(model_path);
  ClassifierOptions classifier_options;
  classifier_options.device = device_choice_from_name(a.device);
  classifier_options.precision = a.precision;
  std::unique_ptr<Classifier> classifier = make_classifier(loaded.model, classifier_options);

  // dcmnet reads TCP_NODELAY when it accepts a connection; without it each
  // C-STORE response waits out Nagle against the peer's delayed ACK (storescu
  // to DCMTK's storescp here: 200 small instances in 10 s, 0.4 s with it on
  // both sides). The user's setting wins.
  ::setenv("TCP_NODELAY", "1", 0);
  StopSignals signals;  // before any thread starts, so that all of them inherit the mask
  serve::ServeCounters counters;
  serve::ClassifyWorker worker(folders, loaded, *classifier, reader, a.batch_size, threads, a.draft, counters);
  std::unique_ptr<serve::SeriesTracker> series;
  if (a.series_timeout > 0) {
    serve::ReportModel report_model;
    for (int64_t c = 0; c < loaded.meta.config.num_classes; ++c)
      report_model.class_names.push_back(loaded.meta.class_name(c));
    report_model.name = model_identity(model_path, loaded.meta);
    series = std::make_unique<serve::SeriesTracker>(report_model, reports, a.out + "/reports.jsonl", a.series_timeout);
    worker.set_series_tracker(series.get());
  }
  std::unique_ptr<serve::SaliencyCaptures> captures;
  if (a.saliency_sc) {
    // The work folder holds only the PNGs of the round in flight: what a crash left is stale.
    std::filesystem::remove_all(a.out + "/.saliency-work");
    make_folder(a.out + "/saliency");
    captures = std::make_unique<serve::SaliencyCaptures>(loaded.model, model_identity(model_path, loaded.meta),
                                                         a.out + "/.saliency-work", a.out + "/saliency");
    worker.set_saliency_captures(captures.get());
  }
  std::unique_ptr<serve::Forwarder> forwarder;
  if (!a.forward_to.empty()) {
    forwarder = std::make_unique<serve::Forwarder>(serve::parse_forward_target(a.forward_to), a.ae_title,
                                                   a.out + "/forward-queue");
    worker.set_forwarder(forwarder.get());
  }
  serve::StoreSetup setup;
  setup.incoming = folders.incoming;
  setup.allowed_callers.insert(a.allow.begin(), a.allow.end());
  setup.counters = &counters;
  setup.on_stored = [&worker] { worker.wake(); };
  serve::ListenerOptions listen;
  listen.ae_title = a.ae_title;
  listen.bind = a.bind;
  listen.port = a.port;
  listen.max_associations = a.max_associations;
  serve::AssociationListener listener(listen, setup);
  worker.set_port(listener.bound_port());
  worker.write_status("running");
  OFLOG_WARN(serve_logger(), "mm-serve: " << a.ae_title << " listening on " << a.bind << ":" << listener.bound_port()
                                          << "; model " << model_path << " on " << classifier->description());

  std::atomic<bool> listener_stopped{false};
  std::exception_ptr worker_error;
  std::thread classifying([&] {
    try {
      worker.run(listener_stopped, signals.urgent);
    } catch (...) {
      worker_error = std::current_exception();
      signals.requested = true;  // a folder that cannot be written: stop receiving too
    }
  });
  listener.run(signals.requested);
  listener_stopped = true;
  worker.wake();
  classifying.join();
  if (worker_error) std::rethrow_exception(worker_error);
  worker.write_status("stopped");
  OFLOG_WARN(serve_logger(), "mm-serve: stopped; " << counters.received << " received, " << counters.classified
                                                   << " classified, " << counters.failed << " failed");
  return kServeStopped;
}

}  // namespace mm

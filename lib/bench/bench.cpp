#include "bench/bench.h"

#include <omp.h>

#include <chrono>
#include <filesystem>
#include <ctime>
#include <cstdio>
#include <memory>
#include <random>
#include <sstream>

#include "core/cuda_memory.h"
#include "core/error.h"
#include "model/cpu_batch_split.h"
#include "model/cpu_bf16_model.h"
#include "model/cpu_int8_model.h"
#include "model/cuda_model_bench.h"
#include "model/medmamba_cuda.h"
#include "model/medmamba.h"
#include "model/model_file.h"
#include "ops/cross_entropy.h"
#include "train/optimizer.h"

namespace mm {

namespace {

// One SGD step over the trainable parameters: enough to time a training step
// honestly (the optimizer's cost is a rounding error next to backward).
}  // namespace

double bench_now_seconds() {
  using clock = std::chrono::steady_clock;
  return std::chrono::duration<double>(clock::now().time_since_epoch()).count();
}

void check_bench_options(const BenchOptions& o) {
  MM_CHECK(o.mode == "forward" || o.mode == "train", "mode must be forward or train");
  MM_CHECK(o.batch >= 1 && o.iters >= 1 && o.warmup >= 0, "batch and iters must be positive");
}

static std::string ints(const std::vector<int64_t>& v) {
  std::string s;
  for (int64_t x : v) s += (s.empty() ? "" : ",") + std::to_string(x);
  return s;
}

// "tiny", or "dims=32,64,128,256:depths=2,2,4,2" for a custom architecture.
static std::string arch_name(const BenchOptions& o) {
  if (!o.model_file.empty()) return "file=" + std::filesystem::path(o.model_file).filename().string();
  return o.dims.empty() ? o.variant : "dims=" + ints(o.dims) + ":depths=" + ints(o.depths);
}

static LoadedModel bench_model_and_meta(const BenchOptions& o) {
  if (!o.model_file.empty()) return load_model(o.model_file);
  ModelConfig cfg = ModelConfig::variant(o.variant, o.num_classes);
  if (!o.dims.empty()) cfg.dims = o.dims, cfg.depths = o.depths;
  cfg.image_size = o.image_size;
  cfg.validate();
  MedMamba model(cfg);
  model.init_reference(0);
  return LoadedModel{std::move(model), ModelMeta{}};
}

MedMamba bench_model(const BenchOptions& o) { return bench_model_and_meta(o).model; }

Tensor bench_images(const BenchOptions& o, int64_t in_chans) {
  Tensor images = Tensor::empty({o.batch, in_chans, o.image_size, o.image_size});
  std::mt19937 rng(1);
  std::normal_distribution<float> normal;
  for (int64_t i = 0; i < images.numel(); ++i) images.f32()[i] = normal(rng);
  return images;
}

BenchResult make_bench_result(const BenchOptions& o, double dt, const std::string& device_field,
                              const std::string& extra) {
  BenchResult r;
  r.seconds_per_iter = dt;
  r.images_per_second = o.batch / dt;
  std::ostringstream line;
  line << "mm-bench variant=" << arch_name(o) << " batch=" << o.batch << " size=" << o.image_size
       << " device=" << device_field << " precision=" << o.precision << " mode=" << o.mode
       << " ms/iter=" << dt * 1e3 << " img/s=" << r.images_per_second << extra;
  r.line = line.str();
  return r;
}

static double process_cpu_seconds() { return double(std::clock()) / CLOCKS_PER_SEC; }

// On a machine shared with other work, wall time says little; CPU time spent says more
// (it counts OpenMP's spin-waits too, so it is a pessimistic figure).
static std::string images_per_cpu_second(const BenchOptions& o, double cpu_start) {
  std::ostringstream s;
  s << " img/cpu-s=" << o.batch * o.iters / (process_cpu_seconds() - cpu_start);
  return s.str();
}

// How a CPU eval forward of this batch uses its threads (MM_CPU_BATCH_SPLIT): per op, or
// one sub-batch per thread.
static std::string batch_split_note(int64_t batch) {
  const int sub_batches = sub_batch_count(batch_split_setting(), batch, omp_get_max_threads());
  return sub_batches > 1 ? " batch_split=images/" + std::to_string(sub_batches) : " batch_split=ops";
}

// A bf16 or int8 inference forward (CpuBf16Model, CpuInt8Model, which throw naming the
// reason where the build or CPU has no such path).
template <class LowPrecisionModel>
static BenchResult time_cpu_low_precision(const BenchOptions& o, LowPrecisionModel& fast, int64_t in_chans,
                                          const std::string& extra = "") {
  Tensor images = bench_images(o, in_chans);
  for (int i = 0; i < o.warmup; ++i) fast.forward(images);
  const double t0 = bench_now_seconds(), c0 = process_cpu_seconds();
  for (int i = 0; i < o.iters; ++i) fast.forward(images);
  const double dt = (bench_now_seconds() - t0) / o.iters;
  return make_bench_result(o, dt, "cpu threads=" + std::to_string(omp_get_max_threads()),
                           images_per_cpu_second(o, c0) + extra + batch_split_note(o.batch));
}

static size_t gpu_bytes_in_use() {
#ifdef MM_HAVE_CUDA
  return cuda::device_bytes_in_use();
#else
  return 0;
#endif
}

BenchResult run_benchmark(const BenchOptions& o) {
  check_bench_options(o);
  MM_CHECK(o.device == "cpu" || o.device == "cuda", "device '" + o.device + "': expected cpu or cuda");
  const bool train = o.mode == "train";
  MM_CHECK(o.device == "cpu" || o.precision != "int8", "--precision int8 runs on the CPU only (--device cpu)");
  if (o.device == "cuda" && !train) return run_cuda_benchmark(o);  // the CudaMedMamba inference engine
  if (o.device == "cuda") {
    MM_CHECK(o.precision == "fp32" || o.precision == "tf32" || o.precision == "bf16",
             "GPU training: --precision fp32, tf32 or bf16 (the GEMMs' compute)");
  } else {
    MM_CHECK(o.precision == "fp32" || o.precision == "bf16" || o.precision == "int8",
             "precision '" + o.precision + "' is not available on the CPU backend (fp32, bf16 or int8)");
    MM_CHECK(o.precision == "fp32" || !train, "the CPU's " + o.precision + " path is inference only (--mode forward)");
    if (o.threads > 0) omp_set_num_threads(o.threads);
  }

  LoadedModel loaded = bench_model_and_meta(o);
  const int64_t in_chans = loaded.model.config().in_chans;
  if (o.device == "cpu" && o.precision == "bf16") {
    CpuBf16Model fast(loaded.model);
    return time_cpu_low_precision(o, fast, in_chans);
  }
  if (o.device == "cpu" && o.precision == "int8") {
    const ActivationScales& scales = loaded.meta.int8_activation_scales;
    CpuInt8Model fast(loaded.model, scales);
    return time_cpu_low_precision(o, fast, in_chans, scales.empty() ? " scales=per-row" : " scales=calibrated");
  }
  auto cpu_model = std::make_unique<MedMamba>(std::move(loaded.model));
  MedMambaCudaOptions gpu;
  if (o.device == "cuda") gpu.math = parse_gemm_math(o.precision, "--precision");
  const bool on_gpu = o.device == "cuda";
  const size_t gpu_bytes_before = on_gpu ? gpu_bytes_in_use() : 0;  // the context, nothing of ours
  const std::unique_ptr<Model> model =
      model_on_device(std::move(cpu_model), o.device == "cuda" ? Device::CUDA : Device::CPU, gpu);
  const ModelConfig& cfg = model->config();
  Tensor images = bench_images(o, cfg.in_chans);
  std::vector<int64_t> labels(size_t(o.batch));
  for (int b = 0; b < o.batch; ++b) labels[size_t(b)] = b % cfg.num_classes;
  Tensor probs = Tensor::empty({o.batch, cfg.num_classes}), dlogits = Tensor::empty({o.batch, cfg.num_classes});

  AdamW adamw(model->table(), AdamWOptions{}, model->device());
  auto step = [&] {
    Tensor logits = model->forward(images, train);
    if (!train) return;
    cross_entropy_forward(probs.f32(), logits.f32(), labels.data(), o.batch, cfg.num_classes);
    dlogits.zero_();
    cross_entropy_backward(dlogits.f32(), probs.f32(), labels.data(), o.batch, cfg.num_classes);
    model->zero_grad();
    model->backward(dlogits);
    clip_grad_norm(model->grads(), model->table(), 1.0);  // mm-train's optimiser step
    adamw.step(model->params(), model->grads(), 1e-4f);
    model->params_changed();  // as mm-train: eval-side state built from the parameters is stale now
  };
  for (int i = 0; i < o.warmup; ++i) step();
  const double t0 = bench_now_seconds(), c0 = process_cpu_seconds();
  for (int i = 0; i < o.iters; ++i) step();
  // The last AdamW step may still run on the GPU: reading a parameter back waits for it.
  if (model->device() == Device::CUDA) (void)model->params().slice_view(0, {1}).to(Device::CPU);
  const double dt = (bench_now_seconds() - t0) / o.iters;
  if (on_gpu) {  // what the model, its activations and the library scratch hold after the steps
    const double mib = double(gpu_bytes_in_use() - gpu_bytes_before) / (1 << 20);
    return make_bench_result(o, dt, "cuda", " gpu_mem_MiB=" + std::to_string(int64_t(mib)));
  }
  return make_bench_result(o, dt, "cpu threads=" + std::to_string(omp_get_max_threads()),
                           images_per_cpu_second(o, c0) + (train ? " batch_split=ops" : batch_split_note(o.batch)));
}

std::string torch_reference_command(const BenchOptions& o, const std::string& python) {
  std::ostringstream cmd;
  cmd << python << " " << MM_SOURCE_DIR << "/test/reference/bench_reference.py --variant " << o.variant
      << (o.dims.empty() ? "" : " --dims " + ints(o.dims) + " --depths " + ints(o.depths))
      << " --batch " << o.batch << " --size " << o.image_size << " --num-classes " << o.num_classes
      << " --mode " << (o.mode == "train" ? "train" : "infer") << " --iters " << o.iters << " --warmup "
      << o.warmup << " --device " << o.device;
  if (o.threads > 0) cmd << " --threads " << o.threads;
  if (o.precision == "int8") cmd << " --quantize int8";
  else if (o.precision != "fp32") cmd << " --amp " << o.precision;
  return cmd.str();
}

double run_torch_reference(const BenchOptions& o, const std::string& python) {
  const std::string cmd = torch_reference_command(o, python);
  std::unique_ptr<FILE, int (*)(FILE*)> pipe(popen(cmd.c_str(), "r"), pclose);
  MM_CHECK(pipe, "cannot run: " + cmd);
  char buf[4096];
  double ips = -1;
  while (std::fgets(buf, sizeof buf, pipe.get())) {
    std::fputs(buf, stdout);
    std::string s(buf);
    auto pos = s.find("img/s=");
    if (s.rfind("torch-reference", 0) == 0 && pos != std::string::npos) ips = std::stod(s.substr(pos + 6));
  }
  MM_CHECK(ips > 0, "the PyTorch reference benchmark failed: " + cmd);
  return ips;
}

}  // namespace mm

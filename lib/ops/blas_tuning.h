#pragma once
// OpenBLAS picks its kernels when the library loads. Debian's OpenBLAS 0.3.21
// does not know AMD Zen 5 and falls back to its AVX2 (Haswell) kernels there:
// measured here, sgemm at 123 GFLOP/s instead of 227 with the AVX-512
// (SkylakeX) kernels, and the model's convolutions 1.7x slower. The only
// switch is the OPENBLAS_CORETYPE environment variable, read before main()
// runs, so an executable re-executes itself once with it set.

namespace mm {

// Call first thing in main(). When OpenBLAS chose Haswell kernels on a CPU with
// AVX-512 and the user did not set OPENBLAS_CORETYPE, re-executes the program
// with OPENBLAS_CORETYPE=SkylakeX (the process image is replaced; on failure it
// simply returns and the program runs with the slower kernels).
// It first calls avoid_blas_thread_contention().
void reexec_with_best_blas_kernels(char** argv);

// With OpenBLAS's pthread build (the default on Ubuntu, where the OpenMP build
// is a separate package), its worker threads and our OpenMP threads spin
// against each other: measured on a 16-core Xeon, a training step of a small
// model ran 29x slower at 16 threads (9.8 images/s) than with one OpenBLAS
// thread (288), and the fight grows with the core count. Unless the user set
// OPENBLAS_NUM_THREADS, OpenBLAS then runs single-threaded inside our
// OpenMP-parallel ops. Returns true when it did so.
bool avoid_blas_thread_contention();

// The kernel family OpenBLAS chose ("Haswell", "SkylakeX", ...).
const char* blas_core_name();

}  // namespace mm

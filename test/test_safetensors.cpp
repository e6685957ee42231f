// safetensors reader/writer: round trips, interop with Python's package, hostile input.
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>

#include <unistd.h>

#include "core/error.h"
#include "core/half.h"
#include "model/model_file.h"
#include "test_util.h"

using namespace mm;

namespace {

std::string tmp_path(const std::string& name) { return "/tmp/mm-test-" + std::to_string(::getpid()) + "-" + name; }

std::string header_file(const std::string& header, const std::string& data = "") {
  std::string s(8, '\0');
  uint64_t n = header.size();
  for (int i = 0; i < 8; ++i) s[size_t(i)] = char((n >> (8 * i)) & 0xff);
  return s + header + data;
}

void expect_error(const std::string& bytes, const std::string& needle) {
  CAPTURE(needle);
  CHECK_THROWS_WITH_AS(parse_safetensors(bytes.data(), bytes.size(), "hostile.safetensors"),
                       doctest::Contains(needle.c_str()), mm::Error);
}

}  // namespace

TEST_CASE("safetensors round trip keeps names, dtypes, shapes, values and metadata") {
  Tensor a = Tensor::empty({2, 3});
  for (int i = 0; i < 6; ++i) a.f32()[i] = float(i) * 0.5f - 1.f;
  Tensor b = a.to(DType::BF16), h = a.to(DType::F16);
  Tensor n = Tensor::empty({}, DType::I64);
  n.as<int64_t>()[0] = 42;
  const std::string path = tmp_path("rt.safetensors");
  write_safetensors(path, {{"a", a}, {"b", b}, {"h", h}, {"n", n}}, {{"k", "v"}});
  SafetensorsFile f = read_safetensors(path);
  std::remove(path.c_str());
  CHECK(f.metadata.at("k") == "v");
  CHECK(f.at("b").dtype() == DType::BF16);
  CHECK(f.at("h").shape() == Shape{2, 3});
  CHECK(f.at("n").as<int64_t>()[0] == 42);
  mm::test::check_close("a", f.at("a"), a, 0.f, 0.f);
  mm::test::check_close("h", f.at("h"), a, 0.f, 0.f);  // these values are exact in f16 and bf16
  mm::test::check_close("b", f.at("b"), a, 0.f, 0.f);
}

TEST_CASE("float16 and bfloat16 conversions round to nearest even") {
  CHECK(f16_to_float(float_to_f16(1.f)) == 1.f);
  CHECK(float_to_f16(65504.f) == 0x7bff);
  CHECK(float_to_f16(1e6f) == 0x7c00);                 // overflow to inf
  CHECK(float_to_f16(5.9604645e-8f) == 0x0001);        // smallest subnormal
  CHECK(f16_to_float(0x0001) == 5.9604645e-8f);
  CHECK(float_to_f16(1.f + 1.f / 2048) == 0x3c00);     // tie rounds to even
  CHECK(float_to_bf16(1.f + 1.f / 256) == 0x3f80);     // tie rounds to even
  CHECK(bf16_to_float(float_to_bf16(-2.5f)) == -2.5f);
}

// As PTX's cvt.rna.tf32.f32 (the CUDA engine's TF32 halo; its weights are rounded by this).
TEST_CASE("float to TF32 rounds to nearest with ties away from zero") {
  const float ulp = 1.f / 1024;  // of TF32 at 1
  CHECK(float_to_tf32(1.f) == 1.f);
  CHECK(float_to_tf32(1.f + ulp / 4) == 1.f);
  CHECK(float_to_tf32(1.f + ulp / 2) == 1.f + ulp);    // tie: away from zero
  CHECK(float_to_tf32(-1.f - ulp / 2) == -1.f - ulp);  // also for negatives
  CHECK(float_to_tf32(1.f + 3 * ulp / 2) == 1.f + 2 * ulp);  // tie, not to even
  CHECK(float_to_tf32(1.f + ulp * 0.75f) == 1.f + ulp);
  CHECK(float_to_tf32(0.f) == 0.f);
  CHECK(std::isinf(float_to_tf32(3.4028235e38f)));  // the largest float rounds past it
  CHECK(std::isinf(float_to_tf32(-INFINITY)));
  CHECK(std::isnan(float_to_tf32(NAN)));
}

TEST_CASE("a file written by Python's safetensors package loads (every fixture is one)") {
  auto f = mm::test::load_fixture("ops/layernorm.safetensors");
  CHECK(f.metadata.at("op") == "layernorm");
  CHECK(f.at("x").dtype() == DType::F32);
}

TEST_CASE("a file we write loads in Python's safetensors package") {
  Tensor a = Tensor::empty({3, 2});
  for (int i = 0; i < 6; ++i) a.f32()[i] = float(i) + 0.25f;
  const std::string path = tmp_path("py.safetensors");
  write_safetensors(path, {{"weight", a}, {"half", a.to(DType::BF16)}}, {{"config", "{\"x\": 1}"}});
  const char* py = std::getenv("MM_PYTHON");
  const std::string cmd = std::string(py ? py : "python3") + " " MM_SOURCE_DIR "/test/reference/check_safetensors_interop.py " + path;
  const int rc = std::system(cmd.c_str());
  std::remove(path.c_str());
  CHECK_MESSAGE(rc == 0, "python safetensors could not read our file: " << cmd);
}

TEST_CASE("malformed safetensors files give clear errors, never a crash or a huge allocation") {
  expect_error("", "too short");
  expect_error(std::string("\x10\0\0\0", 4), "too short");
  // Header length claims 10^12 bytes: refused before any allocation.
  std::string huge(8, '\0');
  const uint64_t big = 1000000000000ull;
  for (int i = 0; i < 8; ++i) huge[size_t(i)] = char((big >> (8 * i)) & 0xff);
  expect_error(huge + "{}", "exceeds the file size");
  expect_error(header_file("{not json"), "not valid JSON");
  expect_error(header_file("[1,2]"), "not a JSON object");
  expect_error(header_file(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}})", "1234"), "outside the data section");
  expect_error(header_file(R"({"a":{"dtype":"F32","shape":[3],"data_offsets":[0,8]}})", "12345678"), "needs 12 bytes");
  expect_error(header_file(R"({"a":{"dtype":"F32","shape":[1000000000000],"data_offsets":[0,8]}})", "12345678"),
               "needs");
  expect_error(header_file(R"({"a":{"dtype":"F32","shape":[4294967296,4294967296,16],"data_offsets":[0,8]}})",
                           "12345678"), "overflows");
  expect_error(header_file(R"({"a":{"dtype":"Q7","shape":[1],"data_offsets":[0,4]}})", "1234"), "unsupported dtype");
  expect_error(header_file(R"({"a":{"dtype":"F32","shape":[-1],"data_offsets":[0,4]}})", "1234"), "non-negative");
  // A zero dim last: numel is 0, but the int64_t product of the dims before it overflowed
  // (fuzz/regressions/fuzz_safetensors/shape-zero-dim-after-int64-overflow.safetensors).
  expect_error(header_file(R"({"a":{"dtype":"F32","shape":[4611686018427387904,3,0],"data_offsets":[0,0]}})"),
               "overflows");
  expect_error(header_file(R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[8,4]}})", "12345678"), "outside");
  expect_error(header_file(R"({"a":{"dtype":"F32"}})"), "needs dtype, shape and data_offsets");
  expect_error(header_file(R"({"__metadata__":{"k":1}})"), "not a string");
  // Deeply nested JSON is rejected as a bad entry, not by blowing the stack.
  expect_error(header_file(std::string(2000, '[') + std::string(2000, ']')), "not a JSON object");
  // Truncation: a valid file cut short at every length fails cleanly.
  const std::string good = header_file(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}})", "12345678");
  CHECK_NOTHROW(parse_safetensors(good.data(), good.size(), "good"));
  for (size_t n = 0; n < good.size(); ++n)
    CHECK_THROWS_AS(parse_safetensors(good.data(), n, "cut"), mm::Error);
  CHECK_THROWS_WITH_AS(read_safetensors("/nonexistent/model.safetensors"), doctest::Contains("cannot open"), mm::Error);
}

TEST_CASE("hostile model metadata (fuzz/regressions/fuzz_safetensors) gives errors naming the reason") {
  // Each was undefined behaviour before: a float cast to int64_t, or int64_t overflow in validate().
  auto read_meta = [](const std::string& name) {
    SafetensorsFile f = read_safetensors(std::string(MM_SOURCE_DIR) + "/fuzz/regressions/fuzz_safetensors/" + name);
    return read_model_meta(f);
  };
  CHECK_THROWS_WITH_AS(read_meta("config-float-num-classes-cast-to-int64.safetensors"),
                       doctest::Contains("'num_classes' must hold integers"), Error);
  CHECK_THROWS_WITH_AS(read_meta("preprocess-float-input-size-cast-to-int64.safetensors"),
                       doctest::Contains("input_size must be an integer"), Error);
  CHECK_THROWS_WITH_AS(read_meta("config-depths-sum-overflows-int64.safetensors"),
                       doctest::Contains("too many stages or blocks"), Error);
  CHECK_THROWS_WITH_AS(read_meta("config-dims-doubling-overflows-int64.safetensors"),
                       doctest::Contains("dims beyond 65536 channels"), Error);
}

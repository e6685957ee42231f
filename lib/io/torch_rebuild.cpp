#include "io/torch_rebuild.h"

#include <algorithm>
#include <cstring>

#include "core/error.h"

namespace mm {

namespace {

constexpr const char* kRebuildTensorV2 = "torch._utils._rebuild_tensor_v2";
constexpr const char* kRebuildTensorV1 = "torch._utils._rebuild_tensor";
constexpr const char* kRebuildParameter = "torch._utils._rebuild_parameter";
constexpr const char* kRebuildParameterWithState = "torch._utils._rebuild_parameter_with_state";
constexpr size_t kMaxDims = 32;
// Upper bound on the product of a shape's non-zero sizes, so that no shape
// arithmetic downstream can overflow (a zero-size tensor may list huge sizes).
constexpr uint64_t kMaxShapeProduct = uint64_t(1) << 40;

bool is_call_of(const PickleValue* v, const char* callable) {
  return v->is(PickleKind::Call) && v->callable()->text == callable;
}

bool is_parameter(const PickleValue* v) {
  return is_call_of(v, kRebuildParameter) || is_call_of(v, kRebuildParameterWithState);
}

struct StoragePid {
  std::string key;
  const TorchStorageType* type = nullptr;
  int64_t numel = 0;
  const PickleValue* view = nullptr;  // (view_key, offset, numel) or nullptr
};

// Parses ('storage', class, key, location, numel[, view]); returns an empty
// string on success, else what is wrong.
std::string parse_pid(const PickleValue* pid, StoragePid& out) {
  if (!pid->is(PickleKind::PersistentId)) return "its storage is " + pid->describe() + ", not a persistent id";
  const PickleValue* t = pid->items.at(0);
  if (!t->is(PickleKind::Tuple) || (t->items.size() != 5 && t->items.size() != 6) || !t->items[0]->is_string("storage"))
    return "its storage id is " + t->describe() + ", expected ('storage', class, key, location, numel)";
  const auto& f = t->items;
  if (!f[1]->is(PickleKind::Global)) return "the storage class is " + f[1]->describe();
  out.type = find_torch_storage(f[1]->text);
  if (!out.type) return "unknown storage class " + f[1]->text;
  if (!f[2]->is(PickleKind::String)) return "the storage key is " + f[2]->describe();
  out.key = f[2]->text;
  if (!f[4]->is(PickleKind::Int) || f[4]->integer < 0) return "the storage size is " + f[4]->describe();
  out.numel = f[4]->integer;
  if (f.size() == 6 && !f[5]->is(PickleKind::None)) out.view = f[5];
  return "";
}

int64_t int_arg(const PickleValue* v, const char* what, const std::function<Error(const std::string&)>& fail) {
  if (!v->is(PickleKind::Int) || v->integer < 0) throw fail(std::string(what) + " is " + v->describe());
  return v->integer;
}

std::vector<int64_t> int_tuple(const PickleValue* v, const char* what, const std::function<Error(const std::string&)>& fail) {
  if (!v->is(PickleKind::Tuple) || v->items.size() > kMaxDims)
    throw fail(std::string(what) + " is " + v->describe() + ", expected a tuple of at most " + std::to_string(kMaxDims));
  std::vector<int64_t> out;
  for (const PickleValue* x : v->items) out.push_back(int_arg(x, what, fail));
  return out;
}

void swap_bytes(uint8_t* p, int64_t n, size_t es) {
  for (int64_t i = 0; i < n; ++i, p += es) std::reverse(p, p + es);
}

}  // namespace

bool is_torch_tensor(const PickleValue* v) {
  return is_call_of(v, kRebuildTensorV2) || is_call_of(v, kRebuildTensorV1) || is_parameter(v);
}

bool storage_pid_key_and_type(const PickleValue* pid, std::string& key, const TorchStorageType*& type) {
  StoragePid p;
  if (!parse_pid(pid, p).empty()) return false;
  key = p.key;
  type = p.type;
  return true;
}

Tensor TensorRebuilder::operator()(const PickleValue* v, const std::string& name) {
  const std::function<Error(const std::string&)> fail = [&](const std::string& why) {
    return Error(what_ + ": tensor '" + name + "': " + why);
  };
  if (is_parameter(v)) {
    if (v->args()->items.empty()) throw fail("nn.Parameter rebuilt without its data");
    v = v->args()->items[0];
  }
  if (!is_call_of(v, kRebuildTensorV2) && !is_call_of(v, kRebuildTensorV1))
    throw fail("is " + v->describe() + ", not a tensor");
  const auto& a = v->args()->items;
  if (a.size() < 4) throw fail(v->callable()->text + " with " + std::to_string(a.size()) + " arguments");

  StoragePid pid;
  const std::string bad_pid = parse_pid(a[0], pid);
  if (!bad_pid.empty()) throw fail(bad_pid);
  if (!pid.type->supported) throw fail("storage class " + std::string(pid.type->global) + " is not supported");
  const size_t es = pid.type->element_size;
  const StorageBytes bytes = storages_.load(pid.key);
  if (uint64_t(pid.numel) > bytes.size / es)
    throw fail("storage '" + pid.key + "' declares " + std::to_string(pid.numel) + " elements but holds " +
               std::to_string(bytes.size) + " bytes");
  // The elements this tensor may address: the whole storage, or a legacy storage view into it.
  uint64_t first = 0, available = uint64_t(pid.numel);
  if (pid.view) {
    const auto& vf = pid.view->items;
    if (!pid.view->is(PickleKind::Tuple) || vf.size() != 3) throw fail("storage view is " + pid.view->describe());
    first = uint64_t(int_arg(vf[1], "storage view offset", fail));
    available = uint64_t(int_arg(vf[2], "storage view size", fail));
    if (first > uint64_t(pid.numel) || available > uint64_t(pid.numel) - first)
      throw fail("storage view [" + std::to_string(first) + ", +" + std::to_string(available) +
                 ") outside its storage of " + std::to_string(pid.numel));
  }

  const uint64_t offset = uint64_t(int_arg(a[1], "storage offset", fail));
  const std::vector<int64_t> sizes = int_tuple(a[2], "size", fail), strides = int_tuple(a[3], "stride", fail);
  if (sizes.size() != strides.size())
    throw fail(std::to_string(sizes.size()) + " sizes but " + std::to_string(strides.size()) + " strides");
  uint64_t product = 1;
  bool empty = false;
  for (int64_t s : sizes) {
    if (s == 0) { empty = true; continue; }
    if (uint64_t(s) > kMaxShapeProduct / product) throw fail("shape " + shape_str(sizes) + " is too large");
    product *= uint64_t(s);
  }
  const uint64_t numel = empty ? 0 : product;
  if (numel == 0) return Tensor::empty(sizes, pid.type->dtype);
  // Largest element index the view reaches; every term is checked for overflow.
  uint64_t last = offset;
  for (size_t d = 0; d < sizes.size(); ++d) {
    uint64_t span;
    if (__builtin_mul_overflow(uint64_t(sizes[d] - 1), uint64_t(strides[d]), &span) ||
        __builtin_add_overflow(last, span, &last))
      throw fail("strides " + shape_str(strides) + " overflow");
  }
  if (last >= available)
    throw fail("view (offset " + std::to_string(offset) + ", size " + shape_str(sizes) + ", stride " +
               shape_str(strides) + ") reaches element " + std::to_string(last) + " of a storage of " +
               std::to_string(available));
  // An expanded tensor (stride 0) could be far larger than its file: refused, as no state dict needs one.
  if (numel > available) throw fail("has more elements than its storage (an expanded tensor)");
  if (numel * es > storages_.total_budget - std::min(used_, storages_.total_budget))
    throw fail("the tensors would take more memory than the file could describe (storages shared too often)");
  used_ += numel * es;
  Tensor t = Tensor::empty(sizes, pid.type->dtype);

  const uint8_t* base = bytes.data + (first + offset) * es;
  uint8_t* dst = t.as<uint8_t>();
  bool contiguous = true;
  for (int64_t d = int64_t(sizes.size()) - 1, expect = 1; d >= 0; --d) {
    if (sizes[size_t(d)] != 1 && strides[size_t(d)] != expect) contiguous = false;
    expect *= sizes[size_t(d)];
  }
  if (contiguous) {
    std::memcpy(dst, base, numel * es);
  } else {
    std::vector<int64_t> index(sizes.size(), 0);
    for (uint64_t n = 0; n < numel; ++n) {
      uint64_t at = 0;
      for (size_t d = 0; d < sizes.size(); ++d) at += uint64_t(index[d]) * uint64_t(strides[d]);
      std::memcpy(dst + n * es, base + at * es, es);
      for (size_t d = sizes.size(); d-- > 0;) {
        if (++index[d] < sizes[d]) break;
        index[d] = 0;
      }
    }
  }
  if (storages_.big_endian && es > 1) swap_bytes(dst, int64_t(numel), es);
  return t;
}

}  // namespace mm

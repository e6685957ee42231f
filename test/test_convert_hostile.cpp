// Truncated, corrupt and hostile checkpoints: a clear mm::Error naming the
// file and the reason, never a crash, a huge allocation or code execution.
#include <cstring>
#include <random>
#include <string>

#include "convert_test_util.h"
#include "core/error.h"
#include "io/zip_reader.h"

using namespace mm;
using namespace mm::test;
using namespace std::string_literals;  // pickles hold NUL bytes

namespace {

const char* const kWhat = "hostile.pth";

void expect_refused(const std::vector<uint8_t>& bytes, const std::string& needle) {
  CAPTURE(needle);
  CHECK_THROWS_WITH_AS(parse_torch_checkpoint(bytes, kWhat), doctest::Contains(needle.c_str()), Error);
}

// A raw pickle stream as the legacy format's object, after valid magic/version/sys_info pickles.
std::vector<uint8_t> legacy_stream(const std::string& object_pickle, const std::string& tail = "") {
  const std::string magic("\x80\x02\x8a\x0a\x6c\xfc\x9c\x46\xf9\x20\x6a\xa8\x50\x19.", 15);
  const std::string version("\x80\x02M\xe9\x03.", 6);
  const std::string sys_info = "\x80\x02}X\x0d\x00\x00\x00little_endian\x88s."s;
  return as_bytes(magic + version + sys_info + object_pickle + tail);
}

std::string f32_bytes(size_t n) { return std::string(n * 4, '\0'); }

// Runs parse on every variant and requires "ok or mm::Error", counting each.
struct Outcomes {
  int ok = 0, refused = 0;
  void run(const std::vector<uint8_t>& bytes) {
    try {
      parse_torch_checkpoint(bytes, kWhat);
      ++ok;
    } catch (const Error&) {
      ++refused;
    }
  }
};

}  // namespace

TEST_CASE("unknown globals are refused by name: a checkpoint never runs code") {
  // torch.save of an object whose __reduce__ is os.system (the fixture's data.pkl names posix.system).
  CHECK_THROWS_WITH_AS(read_torch_checkpoint(checkpoint_fixture("hostile_os_system.pth")),
                       doctest::Contains("refused the global 'posix.system'"), Error);
  // The classic: GLOBAL os.system, REDUCE with ("echo pwned",).
  expect_refused(zip_checkpoint(("\x80\x02" "cos\nsystem\nX\x0a\x00\x00\x00" "echo pwned\x85R."s)),
                 "refused the global 'os.system'");
  // STACK_GLOBAL (protocol 4) naming builtins.eval.
  expect_refused(zip_checkpoint(("\x80\x04\x8c\x08" "builtins\x8c\x04" "eval\x93."s)),
                 "refused the global 'builtins.eval'");
  // A whole pickled model class (torch.save(model) instead of its state_dict).
  expect_refused(legacy_stream("\x80\x02" "cmedmamba\nVSSM\n)\x81."), "refused the global 'medmamba.VSSM'");
  // An allowed global called with the wrong things is an error, not a call.
  expect_refused(zip_checkpoint("\x80\x02" "ccollections\nOrderedDict\nK\x01\x85R."s),
                 "collections.OrderedDict called with arguments");
  // Opcodes that build arbitrary objects are not part of the subset.
  expect_refused(zip_checkpoint("\x80\x02(io\nsystem\n."), "INST");
}

TEST_CASE("TorchScript archives and other non-checkpoints get a clear message") {
  CHECK_THROWS_WITH_AS(read_torch_checkpoint(checkpoint_fixture("torchscript.pt")),
                       doctest::Contains("TorchScript archive (torch.jit.save)"), Error);
  expect_refused(as_bytes("hello"), "not a PyTorch checkpoint");
  expect_refused(as_bytes(("\x80\x02K\x05."s)), "no torch magic number");
  std::vector<uint8_t> tar(1024, 0);
  std::memcpy(tar.data() + 257, "ustar", 5);
  expect_refused(tar, "tar-format checkpoint");
  std::ostringstream npz;
  ZipWriter w(npz, "npz");
  w.add("weights.npy", "x", 1);
  w.finish();
  expect_refused(as_bytes(npz.str()), "without <prefix>/data.pkl");
  // A pickle that is valid but not a state dict.
  expect_refused(zip_checkpoint("\x80\x02}X\x05\x00\x00\x00" "epochK\x03s."s), "no state dict");
  expect_refused(zip_checkpoint("\x80\x02K\x03."), "holds the integer 3, not a state dict");
}

TEST_CASE("truncated checkpoints are refused at every length") {
  for (const char* file : {"tiny_zip.pth", "tiny_legacy.pth", "tiny_deflate.pth"}) {
    CAPTURE(file);
    const std::vector<uint8_t> full = read_bytes(checkpoint_fixture(file));
    REQUIRE(!full.empty());
    Outcomes o;
    for (size_t cut = 0; cut < full.size(); cut += 1 + full.size() / 300)
      o.run(std::vector<uint8_t>(full.begin(), full.begin() + std::ptrdiff_t(cut)));
    o.run(std::vector<uint8_t>(full.begin(), full.end() - 1));
    CHECK(o.ok == 0);
    CHECK(o.refused > 300);
  }
}

TEST_CASE("randomly corrupted checkpoints read or are refused, never crash") {
  std::mt19937 rng(1234);
  for (const char* file : {"tiny_zip.pth", "tiny_legacy.pth", "tiny_views.pth", "tiny_deflate.pth"}) {
    CAPTURE(file);
    const std::vector<uint8_t> full = read_bytes(checkpoint_fixture(file));
    // Most of a checkpoint is tensor data: aim most flips at the first 4 KiB (headers, pickle).
    std::uniform_int_distribution<size_t> head(0, std::min<size_t>(full.size(), 4096) - 1), any(0, full.size() - 1);
    Outcomes o;
    for (int i = 0; i < 300; ++i) {
      std::vector<uint8_t> bad = full;
      for (int k = 0; k < 1 + i % 4; ++k) bad[(i % 3 ? head : any)(rng)] ^= uint8_t(1 + rng() % 255);
      o.run(bad);
    }
    CHECK(o.ok + o.refused == 300);
  }
  // A flipped data byte in a stored record is caught by the CRC.
  std::vector<uint8_t> bytes = read_bytes(checkpoint_fixture("tiny_zip.pth"));
  const ZipReader zip = ZipReader::from_bytes(bytes, "x");
  const ZipEntry* e = zip.find("tiny_zip/data/0");
  REQUIRE(e != nullptr);
  const size_t local = size_t(e->local_header_offset);
  const size_t data = local + 30 + (bytes[local + 26] | bytes[local + 27] << 8) + (bytes[local + 28] | bytes[local + 29] << 8);
  bytes[data + 5] ^= 0x40;
  expect_refused(bytes, "entry 'tiny_zip/data/0': CRC mismatch");
}

TEST_CASE("bad offsets and huge sizes are refused before any allocation") {
  const std::string data = f32_bytes(6);
  // A storage that claims more elements than its record holds.
  expect_refused(zip_checkpoint(one_tensor_pickle("w", "FloatStorage", "0", int64_t(1) << 40, 0, {2, 3}, {3, 1}),
                                {{"0", data}}),
                 "declares 1099511627776 elements but holds 24 bytes");
  // A view past the end of its storage, by offset and by stride.
  expect_refused(zip_checkpoint(one_tensor_pickle("w", "FloatStorage", "0", 6, 4, {2, 3}, {3, 1}), {{"0", data}}),
                 "reaches element 9 of a storage of 6");
  expect_refused(zip_checkpoint(one_tensor_pickle("w", "FloatStorage", "0", 6, 0, {2, 3}, {1000, 1}), {{"0", data}}),
                 "reaches element 1002");
  expect_refused(zip_checkpoint(one_tensor_pickle("w", "FloatStorage", "0", 6, 0, {8, 3}, {int64_t(1) << 62, 1}),
                                {{"0", data}}),
                 "overflow");
  expect_refused(zip_checkpoint(one_tensor_pickle("w", "FloatStorage", "0", 6, 0, {int64_t(1) << 30, int64_t(1) << 30},
                                                  {0, 0}),
                                {{"0", data}}),
                 "too large");
  // An expanded (stride 0) tensor would be far larger than its file.
  expect_refused(zip_checkpoint(one_tensor_pickle("w", "FloatStorage", "0", 6, 0, {1000, 6}, {0, 1}), {{"0", data}}),
                 "more elements than its storage");
  expect_refused(zip_checkpoint(one_tensor_pickle("w", "FloatStorage", "9", 6, 0, {6}, {1}), {{"0", data}}),
                 "storage '9' has no record archive/data/9");
  expect_refused(zip_checkpoint(one_tensor_pickle("w", "BoolStorage", "0", 6, 0, {6}, {1}), {{"0", data}}),
                 "torch.BoolStorage is not supported");
  // Pickle lengths beyond the data.
  expect_refused(zip_checkpoint(("\x80\x02X\xff\xff\xff\xff" "abc"s)), "needs 4294967295 bytes");
  expect_refused(zip_checkpoint(("\x80\x02\x8d\xff\xff\xff\xff\xff\xff\xff\xff"s)), "needs 18446744073709551615 bytes");
  expect_refused(zip_checkpoint(("\x80\x02\x95\xff\xff\xff\xff\x00\x00\x00\x00K\x01."s)), "frame of");
  // The legacy layout: a raw storage claiming more elements than the file has left.
  const std::string legacy_sd = one_tensor_pickle("w", "FloatStorage", "k", 6, 0, {6}, {1});
  const std::string keys = "\x80\x02]X\x01\x00\x00\x00ka."s;
  expect_refused(legacy_stream(legacy_sd, keys + ("\xff\xff\xff\xff\xff\xff\x00\x00"s) + data), "claims");
  expect_refused(legacy_stream(legacy_sd, keys + ("\x06\x00\x00\x00\x00\x00\x00\x00"s) + "abc"), "claims 6");
  // ... and with its storage in place, it reads.
  const TorchCheckpoint ok =
      parse_torch_checkpoint(legacy_stream(legacy_sd, keys + ("\x06\x00\x00\x00\x00\x00\x00\x00"s) + data), kWhat);
  CHECK(ok.tensors.size() == 1);
  CHECK(ok.format == "legacy");
}

TEST_CASE("hostile zip structures are refused") {
  const std::vector<uint8_t> good = zip_checkpoint(one_tensor_pickle("w", "FloatStorage", "0", 6, 0, {6}, {1}), {{"0", f32_bytes(6)}});
  REQUIRE(parse_torch_checkpoint(good, kWhat).tensors.size() == 1);
  auto patched = [&](size_t at_from_end, uint32_t value, int width) {
    std::vector<uint8_t> b = good;
    for (int i = 0; i < width; ++i) b[b.size() - at_from_end + size_t(i)] = uint8_t(value >> (8 * i));
    return b;
  };
  // End-of-central-directory fields (22 bytes from the end): entry count, directory size and offset.
  expect_refused(patched(22 - 10, 0xffff, 2), "claims 65535 entries");
  expect_refused(patched(22 - 16, 0x7fffffff, 4), "outside the");
  expect_refused(patched(22 - 12, 0x7fffffff, 4), "outside the");
  // A local header offset past the end of the archive: first central entry's offset field.
  std::vector<uint8_t> b = good;
  const ZipReader zip = ZipReader::from_bytes(good, "x");
  size_t cd = b.size() - 22;
  cd = size_t(b[cd + 16]) | size_t(b[cd + 17]) << 8 | size_t(b[cd + 18]) << 16 | size_t(b[cd + 19]) << 24;
  b[cd + 42] = 0xf0; b[cd + 43] = 0xff; b[cd + 44] = 0xff; b[cd + 45] = 0x7f;
  expect_refused(b, "local file header at offset");
  // An entry claiming a decompressed size deflate cannot reach (a zip bomb's declaration).
  ZipEntry bomb = zip.entries()[0];
  bomb.method = 8;
  bomb.uncompressed_size = uint64_t(1) << 33;
  CHECK_THROWS_WITH_AS(zip.read(bomb), doctest::Contains("more than deflate can produce"), Error);
  CHECK_THROWS_WITH_AS(zip.read(zip.entries()[0], 4), doctest::Contains("exceeds the limit of 4"), Error);
  bomb.method = 12;  // bzip2
  bomb.uncompressed_size = zip.entries()[0].uncompressed_size;
  CHECK_THROWS_WITH_AS(zip.read(bomb), doctest::Contains("compression method 12"), Error);
  expect_refused(std::vector<uint8_t>(good.begin(), good.begin() + 40), "no zip end-of-central-directory");
}

TEST_CASE("deep nesting, cycles and VM abuse are refused or harmless") {
  // 100k nested MARKs.
  expect_refused(zip_checkpoint("\x80\x02" + std::string(100000, '(') + "."), "MARKs nested deeper than 4096");
  // A list nested 200k deep (built without MARKs): no recursion walks it.
  std::string deep = "\x80\x02";
  for (int i = 0; i < 200000; ++i) deep += ']';
  for (int i = 0; i < 199999; ++i) deep += 'a';
  expect_refused(zip_checkpoint(deep + "."), "holds a list of 1, not a state dict");
  // Wrappers nested deeper than any training script writes: the search stops.
  std::string wrapped = "\x80\x02";
  for (int i = 0; i < 1000; ++i) wrapped += ("}X\x05\x00\x00\x00model"s);
  wrapped += one_tensor_pickle("w", "FloatStorage", "0", 6, 0, {6}, {1}).substr(2);
  wrapped.pop_back();  // its STOP
  for (int i = 0; i < 1000; ++i) wrapped += 's';
  expect_refused(zip_checkpoint(wrapped + ".", {{"0", f32_bytes(6)}}), "no state dict");
  // A list that contains itself (via the memo).
  expect_refused(zip_checkpoint("\x80\x02]q\x00h\x00" "a."s), "holds a list of 1");
  // A dict that contains itself as a value.
  expect_refused(zip_checkpoint("\x80\x02}q\x00X\x01\x00\x00\x00kh\x00s."s), "no state dict");
  // Stack, memo and opcode errors.
  expect_refused(zip_checkpoint("\x80\x02R."), "stack underflow");
  expect_refused(zip_checkpoint("\x80\x02K\x01(\x85."s), "stack underflow");  // TUPLE1 with nothing above its MARK
  expect_refused(zip_checkpoint("\x80\x02h\x07."), "memo entry 7 was never stored");
  expect_refused(zip_checkpoint("\x80\x02\xff."), "unknown opcode 0xff");
  expect_refused(zip_checkpoint("\x80\x09."), "protocol 9");
  expect_refused(zip_checkpoint("\x80\x02K\x01"), "without a STOP");
  expect_refused(zip_checkpoint("\x80\x02K\x01]a."), "expects a list on the stack, found the integer 1");
  expect_refused(zip_checkpoint("\x80\x02}K\x01u."), "no MARK");
  expect_refused(zip_checkpoint("\x80\x02}(K\x01u."), "odd number of keys and values");
  expect_refused(zip_checkpoint("\x80\x02K\x01K\x02" "b."), "sets the state of the integer 1");
  // A tensor entry that is not a tensor call.
  expect_refused(zip_checkpoint("\x80\x02}X\x01\x00\x00\x00wctorch\nFloatStorage\ns."s), "no state dict");
}

TEST_CASE("the unpickler reads the pickle subset state dicts and their wrappers use") {
  PickleDocument doc;
  size_t pos = 0;
  UnpickleOptions opt;
  // Protocol 2 of {"a": [1, -2, 3.5, True, None, "x", b"y", (300, 70000, -70000, 2**40)]} with memo use,
  // then protocol-0 INT/LONG/PUT/GET.
  const std::string p2 =
      "\x80\x02}q\x00X\x01\x00\x00\x00" "a]q\x01(K\x01J\xfe\xff\xff\xffG@\x0c\x00\x00\x00\x00\x00\x00\x88NX\x01\x00\x00\x00" "xC\x01y"
      "(M,\x01J\x70\x11\x01\x00J\x90\xee\xfe\xff\x8a\x06\x00\x00\x00\x00\x00\x01tq\x02" "eh\x02" "as."s;
  const PickleValue* root = unpickle(doc, reinterpret_cast<const uint8_t*>(p2.data()), p2.size(), pos, opt, "p2");
  CHECK(pos == p2.size());
  const PickleValue* a = root->get("a");
  REQUIRE(a != nullptr);
  REQUIRE(a->items.size() == 9);
  CHECK(a->items[0]->integer == 1);
  CHECK(a->items[1]->integer == -2);
  CHECK(a->items[2]->real == 3.5);
  CHECK(a->items[3]->boolean);
  CHECK(a->items[4]->is(PickleKind::None));
  CHECK(a->items[5]->is_string("x"));
  CHECK((a->items[6]->is(PickleKind::Bytes) && a->items[6]->text == "y"));
  const PickleValue* t = a->items[7];
  REQUIRE(t->items.size() == 4);
  CHECK(t->items[0]->integer == 300);
  CHECK(t->items[1]->integer == 70000);
  CHECK(t->items[2]->integer == -70000);
  CHECK(t->items[3]->integer == (int64_t(1) << 40));
  CHECK(a->items[8] == t);  // the memo shares, it does not copy
  const std::string p0 = "(I01\nI-12\nL99L\np7\ng7\nl.";
  pos = 0;
  root = unpickle(doc, reinterpret_cast<const uint8_t*>(p0.data()), p0.size(), pos, opt, "p0");
  REQUIRE(root->items.size() == 4);
  CHECK(root->items[0]->is(PickleKind::Bool));
  CHECK(root->items[1]->integer == -12);
  CHECK(root->items[2]->integer == 99);
  CHECK(root->items[3] == root->items[2]);
  // The node budget holds.
  opt.max_nodes = doc.size() + 3;
  const std::string many("\x80\x02(NNNNNNl.", 11);
  pos = 0;
  CHECK_THROWS_WITH_AS(unpickle(doc, reinterpret_cast<const uint8_t*>(many.data()), many.size(), pos, opt, "many"),
                       doctest::Contains("more than"), Error);
}

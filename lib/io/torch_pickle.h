#pragma once
// A safe unpickler for the subset of Python's pickle format that PyTorch state
// dicts use (the opcodes of protocols 2 to 5 that build data, plus the
// text-form INT/LONG/PUT/GET/PERSID of older writers). It never runs code: it
// builds an inert tree of values.
//   - GLOBAL / STACK_GLOBAL must name a global on the caller's allow-list;
//     anything else is refused with a message naming it.
//   - REDUCE / NEWOBJ of an allowed global become a Call node (callable + args)
//     that the caller interprets; the caller's "dict classes" (OrderedDict)
//     called without arguments become an empty Dict.
//   - BINPERSID becomes a PersistentId node; BUILD records its state on the node.
// Hostile input: every length is checked against the remaining bytes, and the
// node count, stack, mark depth and memo are bounded. Values live in an arena
// (PickleDocument), so cycles made through the memo leak nothing; consumers
// that walk the tree bound their own recursion depth.
#include <cstdint>
#include <deque>
#include <set>
#include <string>
#include <vector>

namespace mm {

enum class PickleKind : uint8_t {
  None, Bool, Int, BigInt, Float, String, Bytes, Tuple, List, Dict, Global, Call, PersistentId,
};
const char* pickle_kind_name(PickleKind k);  // "string", "tuple", ...

struct PickleValue {
  PickleKind kind = PickleKind::None;
  bool boolean = false;
  int64_t integer = 0;
  double real = 0;
  // String / Bytes: the contents. Global: "module.name". BigInt: two's-complement little-endian bytes.
  std::string text;
  // Tuple / List: elements. Dict: keys and values interleaved, in insertion
  // order, duplicates kept (the last one wins, as in Python). Call: {callable, args}.
  // PersistentId: {pid}.
  std::vector<PickleValue*> items;
  PickleValue* state = nullptr;  // the argument of BUILD, when one was applied

  bool is(PickleKind k) const { return kind == k; }
  bool is_string(const char* s) const { return kind == PickleKind::String && text == s; }
  size_t dict_size() const { return items.size() / 2; }
  const PickleValue* dict_key(size_t i) const { return items[2 * i]; }
  const PickleValue* dict_value(size_t i) const { return items[2 * i + 1]; }
  const PickleValue* get(const std::string& key) const;  // Dict with string keys: the last match, or nullptr
  const PickleValue* callable() const { return items.at(0); }  // Call
  const PickleValue* args() const { return items.at(1); }      // Call
  std::string describe() const;  // short, for error messages: "a tuple of 3", "the global torch.FloatStorage"
};

// Owns every value of one or more pickles (the legacy torch format chains several).
class PickleDocument {
 public:
  PickleValue* make(PickleKind kind);
  size_t size() const { return nodes_.size(); }
  const std::deque<PickleValue>& values() const { return nodes_; }

 private:
  std::deque<PickleValue> nodes_;  // deque: addresses stay valid as it grows
};

struct UnpickleOptions {
  std::set<std::string> allowed_globals;  // "module.name"; any other global is refused
  std::set<std::string> dict_classes;     // allowed globals that construct a dict when called with ()
  size_t max_nodes = size_t(1) << 24;     // values in the document (far above any state dict)
  size_t max_stack = size_t(1) << 22;
  size_t max_mark_depth = 4096;
  size_t max_memo = size_t(1) << 22;
};

// Runs one pickle that starts at data[pos], up to and including STOP; pos is
// advanced past it. Throws mm::Error naming `what`, the byte offset and the
// reason on malformed or refused input.
PickleValue* unpickle(PickleDocument& doc, const uint8_t* data, size_t size, size_t& pos,
                      const UnpickleOptions& options, const std::string& what);

// Emits a protocol-2 pickle, one opcode per call, for writers that know the
// structure they produce (torch_checkpoint's state-dict writer). No memo.
class PickleWriter {
 public:
  PickleWriter();  // starts with PROTO 2
  PickleWriter& mark();
  PickleWriter& tuple();                 // from the last mark
  PickleWriter& empty_tuple();
  PickleWriter& global(const std::string& module, const std::string& name);
  PickleWriter& string(const std::string& s);
  PickleWriter& integer(int64_t v);
  PickleWriter& boolean(bool v);
  PickleWriter& reduce();
  PickleWriter& persistent_id();         // BINPERSID of the top of the stack
  PickleWriter& setitems();              // pairs since the last mark into the dict below it
  const std::string& finish();           // appends STOP; the pickle bytes

 private:
  std::string out_;
};

}  // namespace mm

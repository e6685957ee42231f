#include "io/torch_pickle.h"

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <unordered_map>

#include "core/error.h"

namespace mm {

const char* pickle_kind_name(PickleKind k) {
  switch (k) {
    case PickleKind::None: return "None";
    case PickleKind::Bool: return "bool";
    case PickleKind::Int: return "int";
    case PickleKind::BigInt: return "big int";
    case PickleKind::Float: return "float";
    case PickleKind::String: return "string";
    case PickleKind::Bytes: return "bytes";
    case PickleKind::Tuple: return "tuple";
    case PickleKind::List: return "list";
    case PickleKind::Dict: return "dict";
    case PickleKind::Global: return "global";
    case PickleKind::Call: return "call";
    case PickleKind::PersistentId: return "persistent id";
  }
  return "?";
}

const PickleValue* PickleValue::get(const std::string& key) const {
  if (kind != PickleKind::Dict) return nullptr;
  for (size_t i = dict_size(); i-- > 0;)
    if (dict_key(i)->kind == PickleKind::String && dict_key(i)->text == key) return dict_value(i);
  return nullptr;
}

std::string PickleValue::describe() const {
  auto quoted = [](const std::string& s) { return "'" + (s.size() > 40 ? s.substr(0, 40) + "..." : s) + "'"; };
  switch (kind) {
    case PickleKind::None: return "None";
    case PickleKind::Bool: return boolean ? "True" : "False";
    case PickleKind::Int: return "the integer " + std::to_string(integer);
    case PickleKind::BigInt: return "a " + std::to_string(text.size()) + "-byte integer";
    case PickleKind::Float: return "a float";
    case PickleKind::String: return "the string " + quoted(text);
    case PickleKind::Bytes: return std::to_string(text.size()) + " bytes";
    case PickleKind::Tuple: return "a tuple of " + std::to_string(items.size());
    case PickleKind::List: return "a list of " + std::to_string(items.size());
    case PickleKind::Dict: return "a dict of " + std::to_string(dict_size());
    case PickleKind::Global: return "the global " + text;
    case PickleKind::Call: return "a call of " + callable()->text;
    case PickleKind::PersistentId: return "a persistent id";
  }
  return "?";
}

PickleValue* PickleDocument::make(PickleKind kind) {
  nodes_.emplace_back();
  nodes_.back().kind = kind;
  return &nodes_.back();
}

namespace {

const char* opcode_name(uint8_t op) {
  switch (op) {
    case 'I': return "INT"; case 'J': return "BININT"; case 'K': return "BININT1"; case 'M': return "BININT2";
    case 'L': return "LONG"; case 0x8a: return "LONG1"; case 0x8b: return "LONG4"; case 'S': return "STRING";
    case 'T': return "BINSTRING"; case 'U': return "SHORT_BINSTRING"; case 'B': return "BINBYTES";
    case 'C': return "SHORT_BINBYTES"; case 0x8e: return "BINBYTES8"; case 0x96: return "BYTEARRAY8";
    case 0x97: return "NEXT_BUFFER"; case 0x98: return "READONLY_BUFFER"; case 'N': return "NONE";
    case 0x88: return "NEWTRUE"; case 0x89: return "NEWFALSE"; case 'V': return "UNICODE";
    case 0x8c: return "SHORT_BINUNICODE"; case 'X': return "BINUNICODE"; case 0x8d: return "BINUNICODE8";
    case 'F': return "FLOAT"; case 'G': return "BINFLOAT"; case ']': return "EMPTY_LIST"; case 'a': return "APPEND";
    case 'e': return "APPENDS"; case 'l': return "LIST"; case ')': return "EMPTY_TUPLE"; case 't': return "TUPLE";
    case 0x85: return "TUPLE1"; case 0x86: return "TUPLE2"; case 0x87: return "TUPLE3"; case '}': return "EMPTY_DICT";
    case 'd': return "DICT"; case 's': return "SETITEM"; case 'u': return "SETITEMS"; case 0x8f: return "EMPTY_SET";
    case 0x90: return "ADDITEMS"; case 0x91: return "FROZENSET"; case '0': return "POP"; case '2': return "DUP";
    case '(': return "MARK"; case '1': return "POP_MARK"; case 'g': return "GET"; case 'h': return "BINGET";
    case 'j': return "LONG_BINGET"; case 'p': return "PUT"; case 'q': return "BINPUT"; case 'r': return "LONG_BINPUT";
    case 0x94: return "MEMOIZE"; case 0x82: return "EXT1"; case 0x83: return "EXT2"; case 0x84: return "EXT4";
    case 'c': return "GLOBAL"; case 0x93: return "STACK_GLOBAL"; case 'R': return "REDUCE"; case 'b': return "BUILD";
    case 'i': return "INST"; case 'o': return "OBJ"; case 0x81: return "NEWOBJ"; case 0x92: return "NEWOBJ_EX";
    case 0x80: return "PROTO"; case '.': return "STOP"; case 0x95: return "FRAME"; case 'P': return "PERSID";
    case 'Q': return "BINPERSID";
  }
  return nullptr;
}

class Machine {
 public:
  Machine(PickleDocument& doc, const uint8_t* data, size_t size, const UnpickleOptions& opt, const std::string& what)
      : doc_(doc), data_(data), size_(size), opt_(opt), what_(what) {}

  PickleValue* run(size_t& pos) {
    pos_ = pos;
    while (true) {
      op_pos_ = pos_;
      if (pos_ >= size_) fail("the pickle ends without a STOP opcode (truncated)");
      op_ = data_[pos_++];
      if (op_ == '.') {
        PickleValue* result = pop();
        pos = pos_;
        return result;
      }
      step();
    }
  }

 private:
  [[noreturn]] void fail(const std::string& why) const {
    const char* name = opcode_name(op_);
    throw Error(what_ + ": pickle byte " + std::to_string(op_pos_) + " (" + (name ? name : "opcode") + "): " + why);
  }

  const uint8_t* take(uint64_t n) {
    if (n > size_ - pos_) fail("needs " + std::to_string(n) + " bytes but only " + std::to_string(size_ - pos_) +
                               " remain (truncated or corrupt)");
    const uint8_t* p = data_ + pos_;
    pos_ += size_t(n);
    return p;
  }
  uint64_t uint_le(int bytes) {
    const uint8_t* p = take(uint64_t(bytes));
    uint64_t v = 0;
    for (int i = bytes - 1; i >= 0; --i) v = (v << 8) | p[i];
    return v;
  }
  std::string line() {  // text argument of a protocol-0 opcode, up to '\n'
    const void* nl = std::memchr(data_ + pos_, '\n', std::min<size_t>(size_ - pos_, 4096));
    if (!nl) fail("text argument has no newline within 4096 bytes");
    const size_t len = size_t(static_cast<const uint8_t*>(nl) - (data_ + pos_));
    std::string s(reinterpret_cast<const char*>(take(len)), len);
    ++pos_;
    return s;
  }
  int64_t decimal(const std::string& s) {
    errno = 0;
    char* end = nullptr;
    const long long v = std::strtoll(s.c_str(), &end, 10);
    if (s.empty() || errno != 0 || end != s.c_str() + s.size()) fail("'" + s + "' is not a 64-bit decimal integer");
    return v;
  }

  PickleValue* make(PickleKind kind) {
    if (doc_.size() >= opt_.max_nodes) fail("more than " + std::to_string(opt_.max_nodes) + " values");
    return doc_.make(kind);
  }
  PickleValue* make_int(int64_t v) {
    PickleValue* n = make(PickleKind::Int);
    n->integer = v;
    return n;
  }
  PickleValue* make_text(PickleKind kind, const uint8_t* p, uint64_t len) {
    PickleValue* n = make(kind);
    n->text.assign(reinterpret_cast<const char*>(p), size_t(len));
    return n;
  }
  PickleValue* make_seq(PickleKind kind, std::vector<PickleValue*> items) {
    PickleValue* n = make(kind);
    n->items = std::move(items);
    return n;
  }
  // Two's-complement little-endian integer of n bytes (LONG1 / LONG4).
  PickleValue* make_long(const uint8_t* p, uint64_t n) {
    if (n > 8) return make_text(PickleKind::BigInt, p, n);
    uint64_t v = 0;
    for (uint64_t i = n; i-- > 0;) v = (v << 8) | p[i];
    if (n > 0 && n < 8 && (p[n - 1] & 0x80)) v |= ~uint64_t(0) << (8 * n);  // sign-extend
    return make_int(int64_t(v));
  }

  size_t floor() const { return marks_.empty() ? 0 : marks_.back(); }
  void push(PickleValue* v) {
    if (stack_.size() >= opt_.max_stack) fail("stack deeper than " + std::to_string(opt_.max_stack));
    stack_.push_back(v);
  }
  PickleValue* top() {
    if (stack_.size() <= floor()) fail("stack underflow");
    return stack_.back();
  }
  PickleValue* pop() {
    PickleValue* v = top();
    stack_.pop_back();
    return v;
  }
  std::vector<PickleValue*> pop_mark() {
    if (marks_.empty()) fail("no MARK to pop to");
    std::vector<PickleValue*> items(stack_.begin() + std::ptrdiff_t(marks_.back()), stack_.end());
    stack_.resize(marks_.back());
    marks_.pop_back();
    return items;
  }
  PickleValue* top_of_kind(PickleKind kind) {
    PickleValue* v = top();
    if (v->kind != kind)
      fail(std::string("expects a ") + pickle_kind_name(kind) + " on the stack, found " + v->describe());
    return v;
  }

  void memo_put(uint64_t index) {
    if (memo_.size() >= opt_.max_memo && !memo_.count(index))
      fail("more than " + std::to_string(opt_.max_memo) + " memo entries");
    memo_[index] = top();
  }
  void memo_get(uint64_t index) {
    auto it = memo_.find(index);
    if (it == memo_.end()) fail("memo entry " + std::to_string(index) + " was never stored");
    push(it->second);
  }

  void push_global(const std::string& module, const std::string& name) {
    const std::string qualified = module + "." + name;
    if (!opt_.allowed_globals.count(qualified))
      fail("refused the global '" + qualified +
           "': only the types a state dict is made of are allowed (loading a checkpoint never runs code)");
    PickleValue* g = make(PickleKind::Global);
    g->text = qualified;
    push(g);
  }

  void call(PickleValue* callable, PickleValue* args) {
    if (callable->kind != PickleKind::Global) fail("calls " + callable->describe() + ", which is not a global");
    if (args->kind != PickleKind::Tuple) fail("call of " + callable->text + " with " + args->describe() + " as arguments");
    if (opt_.dict_classes.count(callable->text)) {
      if (!args->items.empty()) fail(callable->text + " called with arguments");
      push(make(PickleKind::Dict));
      return;
    }
    push(make_seq(PickleKind::Call, {callable, args}));
  }

  void set_items(PickleValue* dict, const std::vector<PickleValue*>& kv) {
    if (kv.size() % 2) fail("odd number of keys and values");
    dict->items.insert(dict->items.end(), kv.begin(), kv.end());
  }

  void step() {
    switch (op_) {
      case 0x80: {  // PROTO
        const uint8_t proto = *take(1);
        if (proto > 5) fail("pickle protocol " + std::to_string(proto) + " is newer than 5");
        break;
      }
      case 0x95: {  // FRAME: a length prefix for buffering; the content follows inline
        const uint64_t n = uint_le(8);
        if (n > size_ - pos_) fail("frame of " + std::to_string(n) + " bytes overruns the data");
        break;
      }
      case '(':
        if (marks_.size() >= opt_.max_mark_depth) fail("MARKs nested deeper than " + std::to_string(opt_.max_mark_depth));
        marks_.push_back(stack_.size());
        break;
      case '0':
        if (stack_.size() > floor()) stack_.pop_back();
        else pop_mark();
        break;
      case '1': pop_mark(); break;
      case '2': push(top()); break;

      case 'N': push(make(PickleKind::None)); break;
      case 0x88: case 0x89: {
        PickleValue* b = make(PickleKind::Bool);
        b->boolean = op_ == 0x88;
        push(b);
        break;
      }
      case 'J': push(make_int(int32_t(uint32_t(uint_le(4))))); break;
      case 'K': push(make_int(int64_t(uint_le(1)))); break;
      case 'M': push(make_int(int64_t(uint_le(2)))); break;
      case 0x8a: { const uint64_t n = uint_le(1); push(make_long(take(n), n)); break; }
      case 0x8b: {
        const int32_t n = int32_t(uint32_t(uint_le(4)));
        if (n < 0) fail("negative length");
        push(make_long(take(uint64_t(n)), uint64_t(n)));
        break;
      }
      case 'I': {
        const std::string s = line();
        if (s == "00" || s == "01") {  // protocol 0 spells False and True this way
          PickleValue* b = make(PickleKind::Bool);
          b->boolean = s == "01";
          push(b);
        } else {
          push(make_int(decimal(s)));
        }
        break;
      }
      case 'L': {
        std::string s = line();
        if (!s.empty() && s.back() == 'L') s.pop_back();  // Python 2 writes 123L
        push(make_int(decimal(s)));
        break;
      }
      case 'G': {
        const uint8_t* p = take(8);
        uint64_t bits = 0;
        for (int i = 0; i < 8; ++i) bits = (bits << 8) | p[i];  // big-endian
        PickleValue* f = make(PickleKind::Float);
        std::memcpy(&f->real, &bits, 8);
        push(f);
        break;
      }

      case 'X': { const uint64_t n = uint_le(4); push(make_text(PickleKind::String, take(n), n)); break; }
      case 0x8c: { const uint64_t n = uint_le(1); push(make_text(PickleKind::String, take(n), n)); break; }
      case 0x8d: { const uint64_t n = uint_le(8); push(make_text(PickleKind::String, take(n), n)); break; }
      // Python 2 str (legacy checkpoints written under Python 2): read as text.
      case 'T': { const uint64_t n = uint_le(4); push(make_text(PickleKind::String, take(n), n)); break; }
      case 'U': { const uint64_t n = uint_le(1); push(make_text(PickleKind::String, take(n), n)); break; }
      case 'B': { const uint64_t n = uint_le(4); push(make_text(PickleKind::Bytes, take(n), n)); break; }
      case 'C': { const uint64_t n = uint_le(1); push(make_text(PickleKind::Bytes, take(n), n)); break; }
      case 0x8e: { const uint64_t n = uint_le(8); push(make_text(PickleKind::Bytes, take(n), n)); break; }

      case ']': push(make(PickleKind::List)); break;
      case 'l': push(make_seq(PickleKind::List, pop_mark())); break;
      case ')': push(make(PickleKind::Tuple)); break;
      case 't': push(make_seq(PickleKind::Tuple, pop_mark())); break;
      case 0x85: case 0x86: case 0x87: {
        std::vector<PickleValue*> items(size_t(op_ - 0x84));
        for (size_t i = items.size(); i-- > 0;) items[i] = pop();
        push(make_seq(PickleKind::Tuple, std::move(items)));
        break;
      }
      case '}': push(make(PickleKind::Dict)); break;
      case 'd': {
        PickleValue* d = make(PickleKind::Dict);
        set_items(d, pop_mark());
        push(d);
        break;
      }
      case 'a': {
        PickleValue* v = pop();
        top_of_kind(PickleKind::List)->items.push_back(v);
        break;
      }
      case 'e': {
        std::vector<PickleValue*> items = pop_mark();
        PickleValue* list = top_of_kind(PickleKind::List);
        list->items.insert(list->items.end(), items.begin(), items.end());
        break;
      }
      case 's': {
        PickleValue* v = pop();
        PickleValue* k = pop();
        set_items(top_of_kind(PickleKind::Dict), {k, v});
        break;
      }
      case 'u': {
        std::vector<PickleValue*> kv = pop_mark();
        set_items(top_of_kind(PickleKind::Dict), kv);
        break;
      }

      case 'q': memo_put(uint_le(1)); break;
      case 'r': memo_put(uint_le(4)); break;
      case 'p': memo_put(uint64_t(decimal(line()))); break;
      case 0x94: memo_put(memo_.size()); break;
      case 'h': memo_get(uint_le(1)); break;
      case 'j': memo_get(uint_le(4)); break;
      case 'g': memo_get(uint64_t(decimal(line()))); break;

      case 'c': {
        const std::string module = line();
        const std::string name = line();
        push_global(module, name);
        break;
      }
      case 0x93: {
        PickleValue* name = pop();
        PickleValue* module = pop();
        if (!module->is(PickleKind::String) || !name->is(PickleKind::String))
          fail("module and name must be strings, got " + module->describe() + " and " + name->describe());
        push_global(module->text, name->text);
        break;
      }
      case 'R': case 0x81: {  // REDUCE, NEWOBJ: callable(*args) / cls.__new__(cls, *args)
        PickleValue* args = pop();
        PickleValue* callable = pop();
        call(callable, args);
        break;
      }
      case 'b': {
        PickleValue* state = pop();
        PickleValue* obj = top();
        if (!obj->is(PickleKind::Dict) && !obj->is(PickleKind::Call))
          fail("sets the state of " + obj->describe() + ", which has none");
        obj->state = state;
        break;
      }
      case 'Q': push(make_seq(PickleKind::PersistentId, {pop()})); break;
      case 'P': {
        const std::string id = line();
        push(make_seq(PickleKind::PersistentId, {make_text(PickleKind::String, reinterpret_cast<const uint8_t*>(id.data()), id.size())}));
        break;
      }

      default: {
        const char* name = opcode_name(op_);
        fail(name ? std::string("opcode not supported in a state dict") : "unknown opcode 0x" + hex(op_));
      }
    }
  }

  static std::string hex(uint8_t b) {
    const char* digits = "0123456789abcdef";
    return {digits[b >> 4], digits[b & 15]};
  }

  PickleDocument& doc_;
  const uint8_t* data_;
  size_t size_;
  const UnpickleOptions& opt_;
  const std::string& what_;
  size_t pos_ = 0, op_pos_ = 0;
  uint8_t op_ = 0;
  std::vector<PickleValue*> stack_;
  std::vector<size_t> marks_;  // stack heights at each open MARK
  std::unordered_map<uint64_t, PickleValue*> memo_;
};

}  // namespace

PickleValue* unpickle(PickleDocument& doc, const uint8_t* data, size_t size, size_t& pos,
                      const UnpickleOptions& options, const std::string& what) {
  if (pos > size) throw Error(what + ": pickle offset " + std::to_string(pos) + " beyond the data");
  return Machine(doc, data, size, options, what).run(pos);
}

// ---------------------------------------------------------------------------

PickleWriter::PickleWriter() : out_("\x80\x02", 2) {}
PickleWriter& PickleWriter::mark() { out_ += '('; return *this; }
PickleWriter& PickleWriter::tuple() { out_ += 't'; return *this; }
PickleWriter& PickleWriter::empty_tuple() { out_ += ')'; return *this; }
PickleWriter& PickleWriter::reduce() { out_ += 'R'; return *this; }
PickleWriter& PickleWriter::persistent_id() { out_ += 'Q'; return *this; }
PickleWriter& PickleWriter::setitems() { out_ += 'u'; return *this; }
PickleWriter& PickleWriter::boolean(bool v) { out_ += char(v ? 0x88 : 0x89); return *this; }

PickleWriter& PickleWriter::global(const std::string& module, const std::string& name) {
  out_ += 'c' + module + '\n' + name + '\n';
  return *this;
}

PickleWriter& PickleWriter::string(const std::string& s) {
  MM_CHECK(s.size() < (uint64_t(1) << 32), "pickle string too long");
  out_ += 'X';
  for (int i = 0; i < 4; ++i) out_ += char((uint64_t(s.size()) >> (8 * i)) & 0xff);
  out_ += s;
  return *this;
}

PickleWriter& PickleWriter::integer(int64_t v) {
  auto le = [&](uint64_t x, int n) { for (int i = 0; i < n; ++i) out_ += char((x >> (8 * i)) & 0xff); };
  if (v >= 0 && v < 256) { out_ += 'K'; le(uint64_t(v), 1); }
  else if (v >= 0 && v < 65536) { out_ += 'M'; le(uint64_t(v), 2); }
  else if (v >= INT32_MIN && v <= INT32_MAX) { out_ += 'J'; le(uint64_t(v), 4); }
  else { out_ += char(0x8a); out_ += char(8); le(uint64_t(v), 8); }  // LONG1, 8 bytes two's complement
  return *this;
}

const std::string& PickleWriter::finish() {
  out_ += '.';
  return out_;
}

}  // namespace mm

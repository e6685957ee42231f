#include "io/csv.h"

#include <cctype>
#include <fstream>
#include <sstream>

#include "core/error.h"

namespace mm {

namespace {
bool iequals(const std::string& a, const std::string& b) {
  if (a.size() != b.size()) return false;
  for (size_t i = 0; i < a.size(); ++i)
    if (std::tolower((unsigned char)a[i]) != std::tolower((unsigned char)b[i])) return false;
  return true;
}
}  // namespace

int CsvTable::column(const std::string& name) const {
  for (size_t i = 0; i < header.size(); ++i)
    if (iequals(header[i], name)) return int(i);
  return -1;
}

std::string CsvTable::where(size_t row) const { return what + ":" + std::to_string(row_lines.at(row)); }

CsvTable parse_csv(const std::string& text, const std::string& what) {
  CsvTable t;
  t.what = what;
  size_t i = text.compare(0, 3, "\xEF\xBB\xBF") == 0 ? 3 : 0;
  int64_t line = 1;
  std::vector<std::string> row;
  std::string field;
  bool row_has_content = false;
  int64_t row_start = 1;
  auto end_row = [&]() {
    if (row_has_content) {
      row.push_back(field);
      if (t.header.empty()) {
        t.header = row;
      } else {
        MM_CHECK(row.size() == t.header.size(), what + ":" + std::to_string(row_start) + ": " +
                                                    std::to_string(row.size()) + " fields where the header has " +
                                                    std::to_string(t.header.size()));
        t.rows.push_back(row);
        t.row_lines.push_back(row_start);
      }
    }
    row.clear();
    field.clear();
    row_has_content = false;
  };
  while (i < text.size()) {
    const char ch = text[i];
    if (ch == '"' && field.empty()) {  // a quoted field
      const int64_t quote_line = line;
      ++i;
      for (;;) {
        MM_CHECK(i < text.size(), what + ":" + std::to_string(quote_line) + ": quoted field never closed");
        if (text[i] == '"') {
          if (i + 1 < text.size() && text[i + 1] == '"') {
            field += '"';
            i += 2;
            continue;
          }
          ++i;
          break;
        }
        if (text[i] == '\n') ++line;
        field += text[i++];
      }
      row_has_content = true;
      MM_CHECK(i >= text.size() || text[i] == ',' || text[i] == '\n' || text[i] == '\r',
               what + ":" + std::to_string(line) + ": text after a closing quote");
      continue;
    }
    if (ch == ',') {
      row.push_back(field);
      field.clear();
      row_has_content = true;
    } else if (ch == '\n' || ch == '\r') {
      if (ch == '\r' && i + 1 < text.size() && text[i + 1] == '\n') ++i;
      end_row();
      ++line;
      row_start = line;
    } else {
      field += ch;
      row_has_content = true;
    }
    ++i;
  }
  end_row();
  MM_CHECK(!t.header.empty(), what + ": empty CSV file");
  return t;
}

std::string read_text_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  MM_CHECK(in.good(), path + ": cannot open");
  std::ostringstream ss;
  ss << in.rdbuf();
  MM_CHECK(!in.bad(), path + ": read error");
  return ss.str();
}

CsvTable read_csv_file(const std::string& path) { return parse_csv(read_text_file(path), path); }

std::string csv_field(const std::string& value) {
  if (value.find_first_of(",\"\r\n") == std::string::npos) return value;
  std::string out = "\"";
  for (char c : value) {
    if (c == '"') out += '"';
    out += c;
  }
  return out + "\"";
}

}  // namespace mm

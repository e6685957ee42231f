#pragma once
// Comma-separated values as RFC 4180 has them: fields optionally in double
// quotes, "" for a quote inside one, quoted fields may hold commas and line
// breaks; LF or CRLF line ends; a UTF-8 byte-order mark is skipped; blank lines
// are skipped. Every row must have as many fields as the first.
#include <cstdint>
#include <string>
#include <vector>

namespace mm {

struct CsvTable {
  std::string what;                             // the file name, for messages
  std::vector<std::string> header;              // the first row
  std::vector<std::vector<std::string>> rows;   // the rows after it
  std::vector<int64_t> row_lines;               // 1-based line where each row starts

  // Index of the header field equal to name (ASCII case-insensitive); -1 when absent.
  int column(const std::string& name) const;
  // "file.csv:12" for messages about rows[i].
  std::string where(size_t row) const;
};

// Throws mm::Error naming `what` and the line on unbalanced quotes or ragged rows.
CsvTable parse_csv(const std::string& text, const std::string& what);
CsvTable read_csv_file(const std::string& path);

// A field as CSV needs it: quoted when it holds a comma, quote or line break.
std::string csv_field(const std::string& value);

// The whole file as text; throws mm::Error naming the file when it cannot be read.
std::string read_text_file(const std::string& path);

}  // namespace mm

#!/usr/bin/env python3
"""Writes a man page (roff, man(7) macros) from a tool's CLI11 --help output.

Usage: help_to_man.py TOOL OUTPUT VERSION

The first help line "name: summary" gives NAME, "Usage: ..." gives SYNOPSIS, and
each "Heading:" block (Positionals, Options, option groups) an OPTIONS subsection
with one .TP entry per option. help2man is not in the build's package list; this is
the part of it that CLI11's fixed layout needs.
"""
import os
import re
import subprocess
import sys


def roff(text):
    text = text.replace("\\", "\\e").replace("-", "\\-")
    return "\\&" + text if text[:1] in (".", "'") else text


def parse(help_text, name):
    lines = help_text.splitlines()
    summary = lines[0].split(":", 1)[1].strip() if ":" in lines[0] else lines[0]
    usage, sections, current, extra = "", [], None, []
    for line in lines[1:]:
        if line.startswith("Usage:"):
            usage = line[len("Usage:"):].strip()
            usage = name + usage[usage.find(" "):] if " " in usage else name
        elif re.match(r"^\S.*:$", line):  # "Options:", "Positionals:", an option group
            current = (line[:-1], [])
            sections.append(current)
        elif current is not None and re.match(r"^  \S", line):  # an option, maybe with its text after 2+ spaces
            option, text = (re.split(r"\s{2,}", line.strip(), maxsplit=1) + [""])[:2]
            current[1].append([option, text])
        elif current is not None and line.startswith("   ") and current[1]:  # the option's text, continued
            entry = current[1][-1]
            entry[1] = (entry[1] + " " + line.strip()).strip()
        elif line.strip():
            extra.append(line.strip())
    return summary, usage, sections, extra


def main():
    tool, output, version = sys.argv[1:4]
    name = os.path.basename(tool)
    help_text = subprocess.run([tool, "--help"], check=True, capture_output=True, text=True).stdout
    summary, usage, sections, extra = parse(help_text, name)
    out = [f'.TH {name.upper()} 1 "" "medmamba {version}" "User Commands"',
           ".SH NAME", f"{roff(name)} \\- {roff(summary)}",
           ".SH SYNOPSIS", f".B {roff(name)}", roff(usage[len(name):].strip()),
           ".SH DESCRIPTION", roff(summary[:1].upper() + summary[1:]) + "."]
    out += [roff(line) for line in extra]
    out += [".PP", f"The full manual, with examples, file formats and exit codes, is {roff(name)}.md in",
            "/usr/share/medmamba/docs (or share/medmamba/docs under the installation prefix).",
            ".SH OPTIONS"]
    for heading, entries in sections:
        out.append(f".SS {roff(heading)}")
        for option, text in entries:
            out += [".TP", f"\\fB{roff(option)}\\fR", roff(text) if text else ""]
    out += [".SH SEE ALSO", ", ".join(f"\\fB{t}\\fR(1)" for t in
            ("mm-predict", "mm-eval", "mm-train", "mm-convert", "mm-bench", "mm-serve") if t != name)]
    with open(output, "w") as f:
        f.write("\n".join(line for line in out if line != "") + "\n")


if __name__ == "__main__":
    main()

#!/usr/bin/python3
"""Seeds for fuzz/fuzz_tables.cpp: CSV manifests and predictions files in each
format mm-eval reads (docs/mm-eval.md), small and valid.

    /usr/bin/python3 fuzz/seeds/make_table_seeds.py   # from the repository root
"""
import json
import os

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "tables")

SEEDS = {
    "manifest.csv": "path,label,split\nimg/a.png,glioma,train\n\"img/b, c.png\",notumor,test\n\"q\"\"d.png\",glioma,val\n",
    "manifest_indices.csv": "\ufeffpath,label\r\nx/1.dcm,0\r\nx/2.dcm,1\r\n\r\nx/3.dcm,1\r\n",
    "predictions.csv": "path,frame,status,label,class_index,probability,prob_glioma,prob_notumor,error\n"
                       "img/a.png,-1,ok,glioma,0,0.9,0.9,0.1,\nimg/b.png,-1,failed,,,,,,corrupt: bad\n",
    "predictions_columns.csv": "path,cat,dog\nimg/a.png,0.2,0.8\n\"img/b, c.png\",0.6,0.4\n",
    "predictions_json_column.csv": "path,probabilities\nimg/a.png,\"{\"\"a\"\": 0.3, \"\"b\"\": 0.7}\"\n",
    "predictions.json": json.dumps({"class_names": ["glioma", "notumor"], "records": [
        {"path": "img/a.png", "probabilities": [0.7, 0.3]},
        {"path": "img/b.png", "error": "corrupt"}]}),
    "predictions_list.json": json.dumps([{"path": "img/a.png", "prob_glioma": 0.4, "prob_notumor": 0.6},
                                         {"path": "img/b, c.png", "probabilities": {"glioma": 1, "notumor": 0}}]),
    "predictions.jsonl": "\n".join(json.dumps(r) for r in [
        {"path": "img/a.png", "class_index": 1, "label": "notumor", "probabilities": [0.2, 0.8]},
        {"path": "q\"d.png", "class_index": 0, "label": "glioma", "probabilities": [0.9, 0.1]}]) + "\n",
    "exclude.txt": "# duplicates\nimg/a.png\n\nin.csv\n",
}


def main():
    os.makedirs(OUT, exist_ok=True)
    for name, text in SEEDS.items():
        with open(os.path.join(OUT, name), "w", encoding="utf-8", newline="") as f:
            f.write(text)


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""Writes the diff suite's section of the report (Markdown, to stdout) from its measurements.

Usage: diff_report.py MEASURED_DIR REFERENCE_TSV

MEASURED_DIR holds one PAIR.tsv per pair, written by bench/suites/diff.sh: comment lines "#key<TAB>value"
(pair, description, started, finished, commit, runs, cap, load_start, load_end), then one row per tool:
tool, patch bytes, diff s, diff RSS MiB, apply s, apply RSS MiB, output identical, diff CPU s, apply CPU s
(a time column holds "timed out (Ns)" or "failed" instead of a number).

Issue 12's targets are judged on the binary pairs (duckdb, xgboost); the arcade and generated pairs are
checked for regressions against REFERENCE_TSV (label, pair, tool, patch bytes, diff s, diff RSS MiB,
apply s, apply RSS MiB), every reference row shown next to today's figure.
"""

import os
import re
import sys

PAIR_ORDER = ["duckdb", "xgboost", "arcade", "generated-512M"]
BINARY_PAIRS = {"duckdb", "xgboost"}
HDIFF = "HDiffPatch (pip hdiffpatch, zstd)"
PANDA = "Panda3D build_patch/apply_patch"
LIMITED = "mf --memory-limit 512M"
# Regression tolerances: patch bytes are deterministic; times and RSS get 10% for run-to-run noise.
TIME_TOLERANCE = 1.10
RSS_TOLERANCE = 1.10
COLUMNS = ["tool", "patch", "diff_s", "diff_rss", "apply_s", "apply_rss", "identical", "diff_cpu", "apply_cpu"]


def number(value):
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def cap_of(value):
    """The cap in seconds from "timed out (600s)", else None."""
    match = re.match(r"timed out \((\d+)s\)", value or "")
    return float(match.group(1)) if match else None


def read_pair(path):
    meta, rows = {}, {}
    with open(path, encoding="utf-8") as f:
        for line in f:
            line = line.rstrip("\n")
            if not line:
                continue
            if line.startswith("#"):
                key, _, value = line[1:].partition("\t")
                if key == "appended":
                    meta.setdefault("appended", []).append(value)
                elif key not in ("started", "commit", "load_start") or key not in meta:
                    meta[key] = value
                continue
            fields = line.split("\t") + ["-"] * len(COLUMNS)
            row = dict(zip(COLUMNS, fields))
            rows[row["tool"]] = row
    return meta, rows


def read_reference(path):
    refs = []
    if not os.path.exists(path):
        return refs
    with open(path, encoding="utf-8") as f:
        for line in f:
            if line.startswith("#") or not line.strip():
                continue
            label, pair, tool, patch, ds, drss, aps, arss = line.rstrip("\n").split("\t")[:8]
            refs.append(dict(label=label, pair=pair, tool=tool, patch=patch, diff_s=ds, diff_rss=drss,
                             apply_s=aps, apply_rss=arss))
    return refs


def fmt_int(value):
    n = number(value)
    return f"{int(n):,}" if n is not None else (value or "-")


def fmt_secs(value):
    n = number(value)
    return f"{n:.2f}" if n is not None else (value or "-")


def table(rows):
    out = ["| tool | patch bytes | diff s | diff CPU s | diff RSS MiB | apply s | apply CPU s | apply RSS MiB | output identical |",
           "|---|---:|---:|---:|---:|---:|---:|---:|---|"]
    for r in rows.values():
        out.append(f"| {r['tool']} | {fmt_int(r['patch'])} | {fmt_secs(r['diff_s'])} | {fmt_secs(r['diff_cpu'])} | "
                   f"{fmt_int(r['diff_rss']) if number(r['diff_rss']) else '-'} | {fmt_secs(r['apply_s'])} | "
                   f"{fmt_secs(r['apply_cpu'])} | {fmt_int(r['apply_rss']) if number(r['apply_rss']) else '-'} | "
                   f"{r['identical']} |")
    return out


def fmt_num(n):
    return f"{int(n):,}" if n >= 1000 and n == int(n) else f"{n:g}"


def ratio_target(what, mine, theirs, limit, anchor, unit=""):
    """A target "mine / theirs <= limit". A timed-out anchor took longer than its cap, so the ratio is
    below mine / cap: met when that bound is within the limit, unknown otherwise."""
    m = number(mine)
    t = number(theirs)
    if theirs is None:
        theirs = "not measured"
    if m is None:
        mine = mine if mine not in (None, "-") else "not measured"
        return [what, mine, f"{theirs}", "-", f"≤ {limit:.2g}", f"n/a (mf: {mine})"]
    cap = cap_of(theirs)
    if t is None and cap is not None:
        bound = m / cap
        verdict = "met" if bound <= limit else "unknown (anchor capped)"
        return [what, f"{fmt_num(m)}{unit}", f"> {cap:g} s ({anchor} capped)", f"< {bound:.2f}", f"≤ {limit:.2g}", verdict]
    if t is None or t == 0:
        return [what, f"{fmt_num(m)}{unit}", f"{theirs} ({anchor})", "n/a", f"≤ {limit:.2g}", f"n/a ({anchor}: {theirs})"]
    r = m / t
    return [what, f"{fmt_num(m)}{unit}", f"{fmt_num(t)}{unit}", f"{r:.2f}", f"≤ {limit:.2g}", "met" if r <= limit else "**missed**"]


def absolute_target(what, mine, limit, unit):
    m = number(mine)
    if m is None:
        mine = mine if mine not in (None, "-") else "not measured"
        return [what, mine, "-", "-", f"≤ {limit:g}{unit}", f"n/a (mf: {mine})"]
    return [what, f"{fmt_num(m)}{unit}", "-", "-", f"≤ {limit:g}{unit}", "met" if m <= limit else "**missed**"]


def targets(rows, interleaved=None):
    mf = rows.get("mf", {})
    lim = rows.get(LIMITED, {})
    h = rows.get(HDIFF, {})
    p = rows.get(PANDA, {})
    # An anchor's RSS is known only when it completed; a capped run was killed before its peak.
    def completed_rss(row):
        return row.get("diff_rss") if number(row.get("diff_s")) is not None else ("did not complete" if row else None)
    panda_rss = completed_rss(p)
    lines = [
        ratio_target("patch ≤ HDiffPatch's", mf.get("patch"), h.get("patch"), 1.0, "HDiffPatch", " B"),
        ratio_target("diff time ≤ ½ HDiffPatch's", mf.get("diff_s"), h.get("diff_s"), 0.5, "HDiffPatch", " s"),
        ratio_target("diff time ≤ ⅓ build_patch's", mf.get("diff_s"), p.get("diff_s"), 1 / 3, "build_patch", " s"),
        ratio_target("diff peak RSS ≤ ¾ HDiffPatch's", mf.get("diff_rss"), completed_rss(h), 0.75, "HDiffPatch", " MiB"),
        ratio_target("diff peak RSS ≤ build_patch's (where it completes)", mf.get("diff_rss"), panda_rss, 1.0,
                     "build_patch", " MiB"),
        absolute_target("`--memory-limit 512M`: diff peak RSS < 512 MiB", completed_rss(lim), 512, " MiB"),
        ratio_target("`--memory-limit 512M`: patch ≤ 1.2× HDiffPatch's", lim.get("patch"), h.get("patch"), 1.2,
                     "HDiffPatch", " B"),
        absolute_target("apply peak RSS ≤ 64 MiB (default patch)", mf.get("apply_rss") if number(mf.get("apply_s")) is not None else None, 64, " MiB"),
        absolute_target("apply peak RSS ≤ 64 MiB (`--memory-limit` patch)",
                        lim.get("apply_rss") if number(lim.get("apply_s")) is not None else None, 64, " MiB"),
    ]
    single_apply = ratio_target("apply time ≤ ½ apply_patch's (this run)", mf.get("apply_s"), p.get("apply_s"), 0.5,
                                "apply_patch", " s")
    lines.append(single_apply)
    if interleaved:
        # The pair's single runs are too noisy to judge two one-second applies: the repeated runs decide.
        single_apply[-1] = "see the interleaved runs below"
        commit, when, runs, mf_s, p3d_s = interleaved[:5]
        lines.append(ratio_target(f"apply time ≤ ½ apply_patch's (median of {runs} interleaved runs at {commit},"
                                  f" {when}: bench/apply_vs_apply_patch.sh)", mf_s, p3d_s, 0.5, "apply_patch", " s"))
    out = ["| target | mf | anchor | ratio | limit | verdict |", "|---|---:|---:|---:|---:|---|"]
    out += ["| " + " | ".join(line) + " |" for line in lines]
    return out


def regression(pair, rows, refs):
    out = ["| mf figure | this run | reference | label | ratio | allowed | verdict |",
           "|---|---:|---:|---|---:|---:|---|"]
    checks = [("patch bytes", "patch", 1.0), ("diff s", "diff_s", TIME_TOLERANCE),
              ("diff RSS MiB", "diff_rss", RSS_TOLERANCE), ("apply s", "apply_s", TIME_TOLERANCE),
              ("apply RSS MiB", "apply_rss", RSS_TOLERANCE)]
    for ref in refs:
        if ref["pair"] != pair:
            continue
        mine = rows.get(ref["tool"], {})
        for title, key, allowed in checks:
            m, r = number(mine.get(key)), number(ref[key])
            if m is None or r is None or r == 0:
                out.append(f"| {ref['tool']}: {title} | {mine.get(key, '-')} | {ref[key]} | {ref['label']} | - | "
                           f"≤ {allowed:g} | n/a |")
                continue
            ratio = m / r
            verdict = "met" if ratio <= allowed else "**missed**"
            out.append(f"| {ref['tool']}: {title} | {m:g} | {r:g} | {ref['label']} | {ratio:.2f} | ≤ {allowed:g} | {verdict} |")
    return out if len(out) > 2 else []


def main():
    measured_dir, reference = sys.argv[1], sys.argv[2]
    pairs = {}
    names = sorted(os.listdir(measured_dir))
    for name in names:
        # A pair whose run was cut short has only its .tsv.tmp: reported, marked partial.
        partial = name.endswith(".tsv.tmp") and name[:-4] not in names
        if name.endswith(".tsv") or partial:
            meta, rows = read_pair(os.path.join(measured_dir, name))
            meta["partial"] = partial
            pairs[meta.get("pair", name.split(".")[0])] = (meta, rows)
    refs = read_reference(reference)
    out = ["# mf diff/apply vs delta tools", "",
           "Generated by `bench/suites/diff.sh` (all pairs: `bench/suites/diff.sh all`, or name pairs: `duckdb xgboost"
           " arcade generated`). Wall time is the median of the pair's runs, CPU time (user+sys, a check less"
           " sensitive to a busy machine) the median too, and RSS the largest peak of the runs (MiB, /usr/bin/time -v)."
           " Capped commands show \"timed out\". \"output identical\" compares the rebuilt file with the real"
           " new file. Ratios are mf / anchor from the same run. Each pair states when and at which commit it was"
           " measured, its load average (2 cores) and its runs.", ""]
    order = [p for p in PAIR_ORDER if p in pairs] + sorted(p for p in pairs if p not in PAIR_ORDER)
    for pair in order:
        meta, rows = pairs[pair]
        out += [f"## {pair}: {meta.get('description', '')}", "",
                f"Measured {meta.get('started', '?')} – {meta.get('finished', '?')} at mf commit {meta.get('commit', '?')};"
                f" {meta.get('runs', '?')} run(s) a command, capped at {meta.get('cap', '?')} s; load average"
                f" {meta.get('load_start', '?')} at the start, {meta.get('load_end', '?')} at the end."]
        for line in meta.get("appended", []):
            out.append(f"Rows re-measured {line}.")
        if meta["partial"]:
            out.append("**Partial: this pair's run was cut short; the rows missing below were not measured.**")
        out.append("")
        out += table(rows)
        out.append("")
        if pair in BINARY_PAIRS:
            out += [f"Issue 12's targets on {pair} (mf at default settings unless stated; HDiffPatch = the pip package):", ""]
            # Each anchor runs once in the pair's run; two one-second applies need repeated, interleaved runs.
            apply_file = os.path.join(measured_dir, f"{pair}.apply")
            interleaved = None
            if os.path.exists(apply_file):
                with open(apply_file) as f:
                    interleaved = f.read().strip().split("\t")
            out += targets(rows, interleaved)
            out.append("")
        reg = regression(pair, rows, refs)
        if reg:
            out += [f"No regression on {pair}: mf now against the reference figures in bench/diff-reference.tsv"
                    f" (patch bytes must not grow; times and RSS within {TIME_TOLERANCE:g}×):", ""]
            out += reg
            out.append("")
    print("\n".join(out))


if __name__ == "__main__":
    main()

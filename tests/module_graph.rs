//! The direction of the dependencies, checked from the source: `cli` → `serve`/`exec`/
//! `approvals` → the gate and the proxy (and `notify`) → the pure core. No module of the
//! library imports `cli`, the top-level modules import each other without a circle, the
//! layers below never import the ones above, and the receipt module's files import each
//! other without a circle (its ids and shared helpers live in a leaf).
//!
//! The graph is built from `crate::…`, `super::…` and `self::…` paths in every file under
//! `src/` (comments and string literals skipped). `MODULE_GRAPH_OUT=path` also writes the
//! graph, one `module -> imported modules` line each, for a reader.

#![allow(clippy::expect_used)]

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// A token of Rust source, as much as the graph needs.
#[derive(Debug, Clone, PartialEq)]
enum Token {
    Ident(String),
    PathSep,
    Open,
    Close,
    Comma,
    Other,
}

/// Splits source into tokens, dropping comments, strings and character literals.
fn tokens(source: &str) -> Vec<Token> {
    let chars: Vec<char> = source.chars().collect();
    let mut out = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        let next = chars.get(i + 1).copied();
        if c == '/' && next == Some('/') {
            while i < chars.len() && chars[i] != '\n' {
                i += 1;
            }
        } else if c == '/' && next == Some('*') {
            let mut depth = 0;
            while i < chars.len() {
                if chars[i] == '/' && chars.get(i + 1) == Some(&'*') {
                    depth += 1;
                    i += 2;
                } else if chars[i] == '*' && chars.get(i + 1) == Some(&'/') {
                    depth -= 1;
                    i += 2;
                    if depth == 0 {
                        break;
                    }
                } else {
                    i += 1;
                }
            }
        } else if c == 'r' && (next == Some('"') || next == Some('#')) && raw_string_at(&chars, i) {
            i = skip_raw_string(&chars, i);
        } else if c == 'b' && next == Some('"') {
            i = skip_string(&chars, i + 1);
        } else if c == '"' {
            i = skip_string(&chars, i);
        } else if c == '\'' {
            // A character literal ('x', '\n', '\u{..}') or a lifetime ('a).
            if next == Some('\\') {
                i += 2;
                while i < chars.len() && chars[i] != '\'' {
                    i += 1;
                }
                i += 1;
            } else if chars.get(i + 2) == Some(&'\'') {
                i += 3;
            } else {
                i += 1;
            }
        } else if c.is_alphabetic() || c == '_' {
            let start = i;
            while i < chars.len() && (chars[i].is_alphanumeric() || chars[i] == '_') {
                i += 1;
            }
            out.push(Token::Ident(chars[start..i].iter().collect()));
        } else if c.is_whitespace() {
            i += 1;
        } else if c == ':' && next == Some(':') {
            out.push(Token::PathSep);
            i += 2;
        } else {
            out.push(match c {
                '{' => Token::Open,
                '}' => Token::Close,
                ',' => Token::Comma,
                _ => Token::Other,
            });
            i += 1;
        }
    }
    out
}

fn raw_string_at(chars: &[char], i: usize) -> bool {
    let mut j = i + 1;
    while chars.get(j) == Some(&'#') {
        j += 1;
    }
    chars.get(j) == Some(&'"')
        && (i == 0 || !(chars[i - 1].is_alphanumeric() || chars[i - 1] == '_'))
}

fn skip_raw_string(chars: &[char], i: usize) -> usize {
    let mut j = i + 1;
    let mut hashes = 0;
    while chars.get(j) == Some(&'#') {
        hashes += 1;
        j += 1;
    }
    j += 1; // the opening quote
    while j < chars.len() {
        if chars[j] == '"' && (1..=hashes).all(|k| chars.get(j + k) == Some(&'#')) {
            return j + 1 + hashes;
        }
        j += 1;
    }
    j
}

fn skip_string(chars: &[char], i: usize) -> usize {
    let mut j = i + 1;
    while j < chars.len() {
        match chars[j] {
            '\\' => j += 2,
            '"' => return j + 1,
            _ => j += 1,
        }
    }
    j
}

/// The module path of a file under `src/` (`receipt/mod.rs` → `receipt`).
fn module_of(src: &Path, file: &Path) -> Vec<String> {
    let rel = file.strip_prefix(src).expect("under src");
    let mut parts: Vec<String> = rel
        .iter()
        .map(|p| p.to_string_lossy().trim_end_matches(".rs").to_string())
        .collect();
    if parts.last().is_some_and(|p| p == "mod" || p == "lib") {
        parts.pop();
    }
    parts
}

/// Each path a file names from inside the crate, resolved to an absolute module path
/// (the path's segments as far as they go; items are kept, callers cut what they need).
fn references(module: &[String], source: &str) -> Vec<Vec<String>> {
    let toks = tokens(source);
    let mut found = Vec::new();
    // Inline modules (`mod tests { … }`) move `super` and `self` one level down.
    let mut inline: Vec<(String, usize)> = Vec::new();
    let mut depth = 0usize;
    let mut i = 0;
    while i < toks.len() {
        match &toks[i] {
            Token::Open => depth += 1,
            Token::Close => {
                depth = depth.saturating_sub(1);
                if inline.last().is_some_and(|(_, d)| *d == depth) {
                    inline.pop();
                }
            }
            Token::Ident(kw) if kw == "mod" => {
                if let (Some(Token::Ident(name)), Some(Token::Open)) =
                    (toks.get(i + 1), toks.get(i + 2))
                {
                    inline.push((name.clone(), depth));
                }
            }
            Token::Ident(root)
                if (root == "crate" || root == "super" || root == "self" || root == "airlock")
                    && toks.get(i + 1) == Some(&Token::PathSep)
                    && (i == 0 || toks[i - 1] != Token::PathSep) =>
            {
                let mut here: Vec<String> = module.to_vec();
                here.extend(inline.iter().map(|(n, _)| n.clone()));
                let mut base = match root.as_str() {
                    "crate" | "airlock" => Vec::new(),
                    "self" => here.clone(),
                    _ => {
                        let mut b = here.clone();
                        b.pop();
                        b
                    }
                };
                let mut j = i + 2;
                // Further `super::` segments.
                while toks.get(j) == Some(&Token::Ident("super".into()))
                    && toks.get(j + 1) == Some(&Token::PathSep)
                {
                    base.pop();
                    j += 2;
                }
                let (paths, _) = path_tree(&toks, j);
                for p in paths {
                    let mut full = base.clone();
                    full.extend(p);
                    found.push(full);
                }
                i = j;
                continue;
            }
            _ => {}
        }
        i += 1;
    }
    found
}

/// The paths of a use tree starting at `toks[at]`: `a::b`, `{a, b::{c, d}}`, `a::*`.
fn path_tree(toks: &[Token], at: usize) -> (Vec<Vec<String>>, usize) {
    match toks.get(at) {
        Some(Token::Ident(name)) => {
            if toks.get(at + 1) == Some(&Token::PathSep) {
                let (rest, end) = path_tree(toks, at + 2);
                let rest = if rest.is_empty() {
                    vec![Vec::new()]
                } else {
                    rest
                };
                let paths = rest
                    .into_iter()
                    .map(|mut r| {
                        r.insert(0, name.clone());
                        r
                    })
                    .collect();
                (paths, end)
            } else {
                (vec![vec![name.clone()]], at + 1)
            }
        }
        Some(Token::Open) => {
            let mut paths = Vec::new();
            let mut j = at + 1;
            loop {
                match toks.get(j) {
                    None => return (paths, j),
                    Some(Token::Close) => return (paths, j + 1),
                    Some(Token::Comma) => j += 1,
                    Some(Token::Ident(_)) | Some(Token::Open) => {
                        let (mut p, end) = path_tree(toks, j);
                        paths.append(&mut p);
                        j = end.max(j + 1);
                    }
                    Some(_) => j += 1,
                }
            }
        }
        _ => (Vec::new(), at + 1),
    }
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let mut entries: Vec<PathBuf> = std::fs::read_dir(dir)
        .expect("read src")
        .map(|e| e.expect("dir entry").path())
        .collect();
    entries.sort();
    for p in entries {
        if p.is_dir() {
            rust_files(&p, out);
        } else if p.extension().is_some_and(|e| e == "rs") {
            out.push(p);
        }
    }
}

/// Module → the modules it imports, at a given depth under a prefix: depth 1 under `[]`
/// is the top-level graph; depth 2 under `["receipt"]` is the receipt module's files.
type Graph = BTreeMap<String, BTreeSet<String>>;

fn graph(src: &Path, prefix: &[&str]) -> Graph {
    let mut files = Vec::new();
    rust_files(src, &mut files);
    // Unit-test files (`tests.rs`, `*_tests.rs`) are built only for `cargo test`: a test may
    // set up a policy to check a receipt, so they do not count as the code's dependencies.
    files.retain(|f| {
        let stem = f.file_stem().and_then(|s| s.to_str()).unwrap_or("");
        stem != "tests" && !stem.ends_with("_tests")
    });
    let modules: Vec<(Vec<String>, PathBuf)> = files
        .iter()
        .map(|f| (module_of(src, f), f.clone()))
        .collect();
    let known: BTreeSet<Vec<String>> = modules.iter().map(|(m, _)| m.clone()).collect();
    let level = prefix.len();
    let name_at = |path: &[String]| -> Option<String> {
        if path.len() <= level || path[..level].iter().zip(prefix).any(|(a, b)| a != b) {
            return None;
        }
        let module: Vec<String> = path[..=level].to_vec();
        if !known.contains(&module) {
            return None; // an item of the prefix module itself
        }
        Some(path[level].clone())
    };
    let mut out = Graph::new();
    for (module, file) in &modules {
        let Some(from) = (if module.is_empty() {
            Some("lib".to_string())
        } else {
            name_at(module)
        }) else {
            continue;
        };
        if level > 0 && module.is_empty() {
            continue;
        }
        let source = std::fs::read_to_string(file).expect("read source");
        let entry = out.entry(from.clone()).or_default();
        for r in references(module, &source) {
            if let Some(to) = name_at(&r) {
                if to != from {
                    entry.insert(to);
                }
            }
        }
    }
    out
}

fn render(g: &Graph) -> String {
    g.iter()
        .map(|(from, to)| {
            format!(
                "{from} -> {}\n",
                to.iter().cloned().collect::<Vec<_>>().join(", ")
            )
        })
        .collect()
}

/// A circle in the graph, if there is one (as the list of modules around it).
fn circle(g: &Graph) -> Option<Vec<String>> {
    fn visit(
        g: &Graph,
        node: &str,
        path: &mut Vec<String>,
        done: &mut BTreeSet<String>,
    ) -> Option<Vec<String>> {
        if let Some(at) = path.iter().position(|p| p == node) {
            let mut c = path[at..].to_vec();
            c.push(node.to_string());
            return Some(c);
        }
        if done.contains(node) {
            return None;
        }
        path.push(node.to_string());
        for next in g.get(node).into_iter().flatten() {
            if let Some(c) = visit(g, next, path, done) {
                return Some(c);
            }
        }
        path.pop();
        done.insert(node.to_string());
        None
    }
    let mut done = BTreeSet::new();
    g.keys()
        .find_map(|n| visit(g, n, &mut Vec::new(), &mut done))
}

fn src_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

#[test]
fn no_module_imports_the_command_line() {
    let g = graph(&src_dir(), &[]);
    if let Some(out) = std::env::var_os("MODULE_GRAPH_OUT") {
        let receipt = graph(&src_dir(), &["receipt"]);
        let text = format!(
            "# top-level modules of src/ (lib = lib.rs, main = main.rs)\n{}\n# files of src/receipt/\n{}",
            render(&g),
            render(&receipt)
        );
        std::fs::write(out, text).expect("write the graph");
    }
    let offenders: Vec<&String> = g
        .iter()
        .filter(|(from, to)| *from != "main" && *from != "lib" && to.contains("cli"))
        .map(|(from, _)| from)
        .collect();
    assert!(
        offenders.is_empty(),
        "these modules import cli, which only main may: {offenders:?}\n{}",
        render(&g)
    );
}

#[test]
fn the_top_level_modules_have_no_circle() {
    let g = graph(&src_dir(), &[]);
    assert_eq!(
        circle(&g),
        None,
        "top-level modules import each other in a circle:\n{}",
        render(&g)
    );
}

/// The commands and the page: only `cli` and each other (`serve` starts the page) use them.
const ABOVE_THE_GATE: &[&str] = &["approvals", "serve", "exec", "cli"];
/// The request path and the state it shares with the page.
const GATE_AND_PROXY: &[&str] = &["gate", "proxy", "notify"];
/// What the gate and the proxy are built on: no HTTP server, no approval page, no commands.
const PURE_CORE: &[&str] = &[
    "access",
    "audit",
    "aws",
    "config",
    "credentials",
    "describe",
    "identify",
    "net",
    "policy",
    "receipt",
    "secret",
    "sigv4",
    "state",
    "store",
];

/// `(module, imported)` pairs where a module of `lower` imports one of `upper`.
fn upward<'a>(g: &'a Graph, lower: &[&str], upper: &[&str]) -> Vec<(&'a str, &'a str)> {
    g.iter()
        .filter(|(from, _)| lower.contains(&from.as_str()))
        .flat_map(|(from, to)| {
            to.iter()
                .filter(|t| upper.contains(&t.as_str()))
                .map(move |t| (from.as_str(), t.as_str()))
        })
        .collect()
}

#[test]
fn the_gate_the_proxy_and_the_core_never_import_what_sits_above_them() {
    let g = graph(&src_dir(), &[]);
    for name in GATE_AND_PROXY.iter().chain(PURE_CORE) {
        assert!(g.contains_key(*name), "no module {name} in src/ (renamed?)");
    }
    let below: Vec<&str> = GATE_AND_PROXY.iter().chain(PURE_CORE).copied().collect();
    let up = upward(&g, &below, ABOVE_THE_GATE);
    assert!(
        up.is_empty(),
        "imports of the commands or the page from below them: {up:?}\n{}",
        render(&g)
    );
    let up = upward(&g, PURE_CORE, GATE_AND_PROXY);
    assert!(
        up.is_empty(),
        "imports of the gate or the proxy from the pure core: {up:?}\n{}",
        render(&g)
    );
}

#[test]
fn the_receipt_module_has_no_circle() {
    let mut g = graph(&src_dir(), &["receipt"]);
    g.remove("tests");
    assert_eq!(
        circle(&g),
        None,
        "receipt/ files import each other in a circle:\n{}",
        render(&g)
    );
}

#[test]
fn the_graph_reader_sees_grouped_nested_and_inline_paths() {
    let module = vec!["receipt".to_string(), "body".to_string()];
    let source = r#"
        // use crate::cli; (a comment)
        use crate::{audit, proxy::{error, accept::X}};
        use super::keys::Key;
        const S: &str = "crate::cli";
        fn f<'a>(c: char) -> bool { c == '{' && crate::state::now() }
        mod tests { use super::super::verify; use super::*; }
    "#;
    let refs = references(&module, source);
    let firsts: BTreeSet<String> = refs.iter().map(|r| r.join("::")).collect();
    assert!(firsts.contains("audit"), "{firsts:?}");
    assert!(firsts.contains("proxy::error"), "{firsts:?}");
    assert!(firsts.contains("proxy::accept::X"), "{firsts:?}");
    assert!(firsts.contains("receipt::keys::Key"), "{firsts:?}");
    assert!(firsts.contains("state::now"), "{firsts:?}");
    assert!(firsts.contains("receipt::verify"), "{firsts:?}");
    assert!(!firsts.iter().any(|f| f.starts_with("cli")), "{firsts:?}");
}

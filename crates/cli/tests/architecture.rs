//! The workspace's shape, read from its sources: no crate has an import circle, no attention
//! family reaches into another, and the interface and kernels name no family.
//!
//! The rule: module A depends on module B when A's code names one of B's items, through a `use`
//! (braces, `self`, `as` and globs included), a `crate::`/`super::`/`self::` path, or a path that
//! starts at a child module or at a module A imported (`flex::rope(…)`). A parent depends on a
//! child it uses, and a child on a parent whose items it reaches for, so a parent/child pair can
//! form a circle too. Declaring `mod x;` is not a use. A file's inline `#[cfg(test)] mod tests`
//! counts as that file (its `super::` is the file itself). The crate root (`lib.rs`, `main.rs`)
//! is not a node: a path through one of its re-exports (`crate::Model`) counts as a use of the
//! module that defines the item.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Module path (`families::linear::chunked`; "" for the crate root) -> source text.
type Sources = BTreeMap<String, String>;
/// Module -> the modules it depends on.
type Graph = BTreeMap<String, BTreeSet<String>>;

fn crate_sources(src: &Path) -> Sources {
    fn walk(dir: &Path, files: &mut Vec<PathBuf>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                walk(&path, files)
            } else if path.extension().is_some_and(|e| e == "rs") {
                files.push(path)
            }
        }
    }
    let mut files = Vec::new();
    walk(src, &mut files);
    let mut sources = Sources::new();
    for file in files {
        let rel = file.strip_prefix(src).unwrap().with_extension("");
        let parts: Vec<String> =
            rel.iter().map(|s| s.to_string_lossy().into_owned()).filter(|s| s != "mod").collect();
        let module =
            if parts == ["lib"] || parts == ["main"] { String::new() } else { parts.join("::") };
        sources.insert(module, std::fs::read_to_string(&file).unwrap());
    }
    sources
}

/// The source without comments, string and char literals (their text is not code).
fn code_only(text: &str) -> String {
    let b = text.as_bytes();
    let mut out = String::with_capacity(text.len());
    let mut i = 0;
    while i < b.len() {
        let rest = &text[i..];
        if rest.starts_with("//") {
            i += rest.find('\n').unwrap_or(rest.len());
        } else if rest.starts_with("/*") {
            let mut depth = 0;
            while i < b.len() {
                if text[i..].starts_with("/*") {
                    depth += 1;
                    i += 2;
                } else if text[i..].starts_with("*/") {
                    depth -= 1;
                    i += 2;
                    if depth == 0 {
                        break;
                    }
                } else {
                    i += 1;
                }
            }
        } else if rest.starts_with("r#\"") || rest.starts_with("r\"") || rest.starts_with("br\"") {
            let start = rest.find('r').unwrap() + 1;
            let hashes = rest[start..].chars().take_while(|&c| c == '#').count();
            let close = format!("\"{}", "#".repeat(hashes));
            let body = start + hashes + 1;
            i += body + rest[body..].find(&close).map_or(rest.len() - body, |e| e + close.len());
            out.push_str("\"\"");
        } else if b[i] == b'"' {
            i += 1;
            while i < b.len() && b[i] != b'"' {
                i += if b[i] == b'\\' { 2 } else { 1 };
            }
            i += 1;
            out.push_str("\"\"");
        } else if b[i] == b'\'' && (rest.starts_with("'\\") || rest.chars().nth(2) == Some('\'')) {
            // A char literal ('a', '\n', '\''); a lifetime ('a) has no closing quote.
            i += 1;
            while i < b.len() && b[i] != b'\'' {
                i += if b[i] == b'\\' { 2 } else { 1 };
            }
            i += 1;
            out.push_str("' '");
        } else {
            let c = rest.chars().next().unwrap();
            out.push(c);
            i += c.len_utf8();
        }
    }
    out
}

#[derive(Debug, PartialEq)]
enum Token {
    Ident(String),
    Path, // `::`
    Punct(char),
}

fn tokens(code: &str) -> Vec<Token> {
    let chars: Vec<char> = code.chars().collect();
    let mut out = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        if c.is_alphanumeric() || c == '_' {
            let start = i;
            while i < chars.len() && (chars[i].is_alphanumeric() || chars[i] == '_') {
                i += 1;
            }
            out.push(Token::Ident(chars[start..i].iter().collect()));
            continue;
        }
        if c == ':' && chars.get(i + 1) == Some(&':') {
            out.push(Token::Path);
            i += 2;
            continue;
        }
        if !c.is_whitespace() {
            out.push(Token::Punct(c));
        }
        i += 1;
    }
    out
}

/// `use` trees expanded to full paths (`a::{b, c::d as e}` -> `a::b`, `a::c::d`), each with the
/// name it binds.
fn expand_use(toks: &[Token], prefix: &[String], out: &mut Vec<(Vec<String>, Option<String>)>) {
    // Split the top level on commas.
    let mut depth = 0;
    let mut start = 0;
    let mut items = Vec::new();
    for (i, t) in toks.iter().enumerate() {
        match t {
            Token::Punct('{') => depth += 1,
            Token::Punct('}') => depth -= 1,
            Token::Punct(',') if depth == 0 => {
                items.push(&toks[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    items.push(&toks[start..]);
    for item in items {
        let mut path = prefix.to_vec();
        let mut j = 0;
        let mut alias = None;
        while j < item.len() {
            match &item[j] {
                Token::Ident(s) if s == "as" => {
                    if let Some(Token::Ident(a)) = item.get(j + 1) {
                        alias = Some(a.clone());
                    }
                    break;
                }
                Token::Ident(s) if s == "self" && j > 0 => {}
                Token::Ident(s) => path.push(s.clone()),
                Token::Punct('{') => {
                    let end = item.len() - 1; // the matching '}' closes the item
                    expand_use(&item[j + 1..end], &path, out);
                    path.clear();
                    break;
                }
                Token::Punct('*') => {
                    path.push("*".into());
                }
                _ => {}
            }
            j += 1;
        }
        if !path.is_empty() {
            let bound = alias.or_else(|| path.last().filter(|s| *s != "*").cloned());
            out.push((path, bound));
        }
    }
}

/// Where each module's code points, by the rule in the module docs.
fn dependency_graph(sources: &Sources) -> Graph {
    let modules: BTreeSet<&String> = sources.keys().collect();
    let is_module = |m: &str| modules.contains(&m.to_string());
    let parent = |m: &str| m.rsplit_once("::").map_or(String::new(), |(p, _)| p.to_string());
    // The crate root's re-exports: item name -> the module that defines it.
    let mut root_items: BTreeMap<String, String> = BTreeMap::new();
    if let Some(root) = sources.get("") {
        let toks = tokens(&code_only(root));
        for (path, bound) in uses(&toks) {
            let target = longest_module(&path, "", &is_module);
            if let (Some(t), Some(b)) = (target, bound)
                && !t.is_empty()
            {
                root_items.insert(b, t);
            }
        }
    }
    let mut graph = Graph::new();
    for (me, text) in sources {
        if me.is_empty() {
            continue;
        }
        let toks = tokens(&code_only(text));
        let mut targets: BTreeSet<String> = BTreeSet::new();
        // Names that stand for a module here: children and imported modules.
        let mut names: BTreeMap<String, String> = BTreeMap::new();
        for m in &modules {
            if parent(m) == *me && !m.is_empty() {
                names.insert(m.rsplit("::").next().unwrap().to_string(), m.to_string());
            }
        }
        let resolve = |segs: &[String], at: &str, names: &BTreeMap<String, String>| {
            let first = segs.first().map(String::as_str).unwrap_or("");
            let (base, rest): (String, &[String]) = match first {
                "crate" => (String::new(), &segs[1..]),
                "self" => (at.to_string(), &segs[1..]),
                "super" => {
                    let mut base = at.to_string();
                    let mut k = 0;
                    while segs.get(k).is_some_and(|s| s == "super") {
                        base = parent(&base);
                        k += 1;
                    }
                    (base, &segs[k..])
                }
                name => match names.get(name) {
                    Some(module) => (module.clone(), &segs[1..]),
                    None => return None,
                },
            };
            let mut full: Vec<String> =
                base.split("::").filter(|s| !s.is_empty()).map(String::from).collect();
            full.extend(rest.iter().cloned());
            let target = longest_module(&full, "", &is_module)?;
            if target.is_empty() {
                // An item of the crate root: follow its re-export.
                return rest.first().and_then(|item| root_items.get(item)).cloned();
            }
            Some(target)
        };
        // Inline modules (`mod tests { … }`) shift what `super` means inside them.
        let inline_depth = inline_module_depths(&toks);
        let mut i = 0;
        while i < toks.len() {
            let at = {
                let mut m = me.clone();
                for _ in 0..inline_depth[i] {
                    m = format!("{m}::<inline>");
                }
                m
            };
            if toks[i] == Token::Ident("use".into()) {
                let end = toks[i..].iter().position(|t| *t == Token::Punct(';')).map(|e| i + e);
                let end = end.unwrap_or(toks.len());
                let mut expanded = Vec::new();
                expand_use(&toks[i + 1..end], &[], &mut expanded);
                for (path, bound) in expanded {
                    let path: Vec<String> = path.into_iter().filter(|s| s != "*").collect();
                    if let Some(t) = resolve(&path, &at, &names) {
                        // An imported module can start later paths.
                        let full_is_module = t.rsplit("::").next()
                            == path.last().map(|s| s.as_str())
                            || path.last().is_some_and(|l| l == "self");
                        if let (true, Some(b)) = (full_is_module, bound) {
                            names.insert(b, t.clone());
                        }
                        targets.insert(t);
                    }
                }
                i = end + 1;
                continue;
            }
            // A path `a::b::c` starting here (and not the tail of a longer one).
            let starts_path = matches!(&toks[i], Token::Ident(_))
                && toks.get(i + 1) == Some(&Token::Path)
                && (i == 0 || toks[i - 1] != Token::Path);
            if starts_path {
                let mut segs = Vec::new();
                let mut j = i;
                while let Some(Token::Ident(s)) = toks.get(j) {
                    segs.push(s.clone());
                    if toks.get(j + 1) == Some(&Token::Path) {
                        j += 2;
                    } else {
                        j += 1;
                        break;
                    }
                }
                if let Some(t) = resolve(&segs, &at, &names) {
                    targets.insert(t);
                }
                i = j;
                continue;
            }
            i += 1;
        }
        let targets: BTreeSet<String> = targets
            .into_iter()
            .map(|t| t.split("::<inline>").next().unwrap().to_string())
            .filter(|t| t != me && !t.is_empty())
            .collect();
        graph.insert(me.clone(), targets);
    }
    graph
}

fn uses(toks: &[Token]) -> Vec<(Vec<String>, Option<String>)> {
    let mut out = Vec::new();
    for (i, t) in toks.iter().enumerate() {
        if *t == Token::Ident("use".into()) {
            let end = toks[i..]
                .iter()
                .position(|t| *t == Token::Punct(';'))
                .map_or(toks.len(), |e| i + e);
            expand_use(&toks[i + 1..end], &[], &mut out);
        }
    }
    out
}

/// The longest prefix of `path` (relative to the crate) that is a module; "" for the root.
fn longest_module(path: &[String], _at: &str, is_module: &dyn Fn(&str) -> bool) -> Option<String> {
    let path: Vec<&String> = path.iter().take_while(|s| *s != "*").collect();
    (0..=path.len())
        .rev()
        .map(|n| path[..n].iter().map(|s| s.as_str()).collect::<Vec<_>>().join("::"))
        .find(|m| m.is_empty() || is_module(m))
}

/// For each token, how many inline `mod name { … }` blocks enclose it.
fn inline_module_depths(toks: &[Token]) -> Vec<usize> {
    let mut depths = vec![0; toks.len()];
    let mut braces = 0usize;
    let mut open: Vec<usize> = Vec::new(); // brace depth at which each inline module opened
    for (i, t) in toks.iter().enumerate() {
        match t {
            Token::Punct('{') => {
                let is_mod = i >= 2
                    && toks[i - 2] == Token::Ident("mod".into())
                    && matches!(toks[i - 1], Token::Ident(_));
                braces += 1;
                if is_mod {
                    open.push(braces);
                }
            }
            Token::Punct('}') => {
                if open.last() == Some(&braces) {
                    open.pop();
                }
                braces = braces.saturating_sub(1);
            }
            _ => {}
        }
        depths[i] = open.len();
    }
    depths
}

/// Every circle, as its strongly connected components (Tarjan), each sorted.
fn circles(graph: &Graph) -> Vec<Vec<String>> {
    struct State<'g> {
        graph: &'g Graph,
        index: BTreeMap<&'g str, usize>,
        low: BTreeMap<&'g str, usize>,
        stack: Vec<&'g str>,
        on_stack: BTreeSet<&'g str>,
        found: Vec<Vec<String>>,
    }
    fn connect<'g>(s: &mut State<'g>, v: &'g str) {
        let n = s.index.len();
        s.index.insert(v, n);
        s.low.insert(v, n);
        s.stack.push(v);
        s.on_stack.insert(v);
        for w in s.graph.get(v).into_iter().flatten() {
            let w = w.as_str();
            if !s.index.contains_key(w) {
                connect(s, w);
                let lw = s.low[w];
                let lv = s.low.get_mut(v).unwrap();
                *lv = (*lv).min(lw);
            } else if s.on_stack.contains(w) {
                let iw = s.index[w];
                let lv = s.low.get_mut(v).unwrap();
                *lv = (*lv).min(iw);
            }
        }
        if s.low[v] == s.index[v] {
            let mut component = Vec::new();
            while let Some(w) = s.stack.pop() {
                s.on_stack.remove(w);
                component.push(w.to_string());
                if w == v {
                    break;
                }
            }
            if component.len() > 1 {
                component.sort();
                s.found.push(component);
            }
        }
    }
    let mut s = State {
        graph,
        index: BTreeMap::new(),
        low: BTreeMap::new(),
        stack: Vec::new(),
        on_stack: BTreeSet::new(),
        found: Vec::new(),
    };
    for v in graph.keys() {
        if !s.index.contains_key(v.as_str()) {
            connect(&mut s, v);
        }
    }
    s.found.sort();
    s.found
}

fn workspace_crates() -> Vec<(&'static str, PathBuf)> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    ["model", "train", "eval", "cli"].map(|c| (c, root.join("crates").join(c).join("src"))).into()
}

#[test]
fn no_crate_has_an_import_circle() {
    let mut report = Vec::new();
    for (name, src) in workspace_crates() {
        let graph = dependency_graph(&crate_sources(&src));
        for circle in circles(&graph) {
            // Each edge inside the circle, so the message says which use to remove.
            let edges: Vec<String> = circle
                .iter()
                .flat_map(|a| {
                    graph[a]
                        .iter()
                        .filter(|b| circle.contains(b))
                        .map(move |b| format!("{a} -> {b}"))
                })
                .collect();
            report.push(format!("{name}: {}", edges.join(", ")));
        }
    }
    assert!(
        report.is_empty(),
        "import circles (see the rule in this file's docs):\n{}",
        report.join("\n")
    );
}

#[test]
fn no_family_names_another_and_the_interface_names_none() {
    let (_, src) = &workspace_crates()[0];
    let graph = dependency_graph(&crate_sources(src));
    let family_of = |m: &str| {
        m.strip_prefix("families::").map(|rest| rest.split("::").next().unwrap_or(rest).to_string())
    };
    for (m, targets) in &graph {
        let Some(mine) = family_of(m) else { continue };
        let others: Vec<_> =
            targets.iter().filter(|t| family_of(t).is_some_and(|f| f != mine)).collect();
        assert!(others.is_empty(), "family module {m} names another family: {others:?}");
    }
    // What two families share lives outside `families`; the interface and the kernels name no
    // family (the registry, `families` itself, names them all).
    for (m, targets) in &graph {
        let leaf =
            ["mixer", "heads", "fused"].iter().any(|l| m == l || m.starts_with(&format!("{l}::")));
        let named: Vec<_> = targets.iter().filter(|t| t.starts_with("families")).collect();
        assert!(!leaf || named.is_empty(), "{m} names a family: {named:?}");
    }
}

/// A family or kernel file fits a screen or two: past ~500 lines it becomes a folder (its tests
/// in `tests.rs` or `tests/`, as `families/linear/` is), so no model source file is over 500.
#[test]
fn no_model_source_file_is_over_500_lines() {
    let (_, src) = &workspace_crates()[0];
    let too_long: Vec<String> = crate_sources(src)
        .into_iter()
        .filter(|(module, _)| module != "tests" && !module.ends_with("::tests"))
        .filter(|(module, _)| !module.contains("::tests::") && !module.starts_with("tests::"))
        .map(|(module, text)| (module, text.lines().count()))
        .filter(|&(_, lines)| lines > 500)
        .map(|(module, lines)| format!("{module}: {lines} lines"))
        .collect();
    assert!(too_long.is_empty(), "split these into folders:\n{}", too_long.join("\n"));
}

/// The detector itself: each shape of circle the workspace once had is found.
#[test]
fn the_circle_detector_sees_every_kind_of_use() {
    let check = |files: &[(&str, &str)], expect: &[&str]| {
        let sources: Sources = files.iter().map(|(m, s)| (m.to_string(), s.to_string())).collect();
        let found = circles(&dependency_graph(&sources));
        let want: Vec<String> = expect.iter().map(|s| s.to_string()).collect();
        assert_eq!(found.first().cloned().unwrap_or_default(), want, "{files:?}");
    };
    // A path-qualified call into a child, closing through a `crate::` use back (heads -> fused
    // -> flex -> heads).
    check(
        &[
            ("", "pub mod heads; pub mod fused;"),
            ("heads", "use crate::fused; fn f() { fused::run(); }"),
            ("fused", "mod flex; pub fn run() { flex::go() }"),
            ("fused::flex", "pub fn go() { crate::heads::angles(); }"),
        ],
        &["fused", "fused::flex", "heads"],
    );
    // Two siblings through braces and `self` (metrics <-> run_dir).
    check(
        &[("a", "use crate::{b::{self, Thing}, c};"), ("b", "use super::a::Other;"), ("c", "")],
        &["a", "b"],
    );
    // A child reaching back for its parent's item while the parent uses the child.
    check(
        &[
            ("compare", "mod spec; pub use spec::Spec; pub struct Arm;"),
            ("compare::spec", "use super::Arm; pub struct Spec;"),
        ],
        &["compare", "compare::spec"],
    );
    // Through the crate root's re-export, and a renamed import.
    check(
        &[
            ("", "pub use progress::Verbosity;"),
            ("progress", "use crate::trainer as t; fn f() { t::step(); }"),
            ("trainer", "use crate::Verbosity;"),
        ],
        &["progress", "trainer"],
    );
    // Comments, strings and an inline test module do not count; test code's `super` is the file.
    check(
        &[
            (
                "x",
                "// crate::y::f\nfn f() { let s = \"crate::y::g\"; }\n#[cfg(test)] mod tests { use super::*; }",
            ),
            ("y", "use crate::x::f;"),
        ],
        &[],
    );
}

//! A guard on the workspace's layering (issue 18): which top-level modules of `node/src` and of
//! `cluster/src` refer to which others, with no import cycle between them; and no source file of any
//! crate over [`MAX_CODE_LINES`] lines of code. It lives here, in the crate that sits on top of the
//! others, so one test run checks them all.
//!
//! The scan is textual and deliberately small: comments, string and char literals are blanked out, then
//! every `crate::m` path (in `use` lines or inline, `use crate::{a, b}` groups included) and every
//! `super::` chain that climbs to the crate root (counted from the file's place in the tree and any inline
//! `mod x { .. }`) gives an edge to top-level module `m`. Doc links do not count: they are comments. Test
//! code counts: it is compiled into the module.
//!
//! Cycles that still exist are listed in [`KNOWN_BACK_EDGES`]: edges that point "up" against the intended
//! layering. With them removed the graph must be acyclic, and each of them must still lie on a cycle, so
//! the list only shrinks. The graph logic ([`check`]) is a pure function, tested on small graphs below.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// A directed graph over module names: `a → {b, ..}` when `a` refers to `b`.
pub type Graph = BTreeMap<String, BTreeSet<String>>;

/// Edges that still close an import cycle today, each with why it exists. Remove an entry when its edge goes.
///
/// The order they are judged against is the one README.md draws (checked by
/// `the_readme_draws_the_real_layers`). None is left: node/src has no import cycle (the last edge, webhooks → socket, went with `close`).
const KNOWN_BACK_EDGES: &[(&str, &str, &str)] = &[];

/// The most lines of code (not blank, not only comment, not under `#[cfg(test)]`) one source file may
/// hold: past it a file holds more than one concept a reader looks for by name.
pub const MAX_CODE_LINES: usize = 600;

/// Source files still over [`MAX_CODE_LINES`], each with why; the list only shrinks (a listed file
/// that fits fails the check, so its entry goes).
/// None is left: config and the CDC hub were split (issue 18).
const KNOWN_LARGE: &[(&str, &str)] = &[];

/// Strongly connected components with more than one module (a module referring to itself is not a cycle),
/// each sorted, largest first.
pub fn cycles(graph: &Graph) -> Vec<Vec<String>> {
    struct Tarjan<'g> {
        graph: &'g Graph,
        index: BTreeMap<&'g str, usize>,
        low: BTreeMap<&'g str, usize>,
        stack: Vec<&'g str>,
        on_stack: BTreeSet<&'g str>,
        out: Vec<Vec<String>>,
    }
    impl<'g> Tarjan<'g> {
        fn visit(&mut self, v: &'g str) {
            let i = self.index.len();
            self.index.insert(v, i);
            self.low.insert(v, i);
            self.stack.push(v);
            self.on_stack.insert(v);
            for w in self.graph.get(v).into_iter().flatten() {
                let w = w.as_str();
                if !self.index.contains_key(w) {
                    self.visit(w);
                    let lw = self.low[w];
                    let lv = self.low.get_mut(v).expect("visited");
                    *lv = (*lv).min(lw);
                } else if self.on_stack.contains(w) {
                    let iw = self.index[w];
                    let lv = self.low.get_mut(v).expect("visited");
                    *lv = (*lv).min(iw);
                }
            }
            if self.low[v] == self.index[v] {
                let mut scc = Vec::new();
                loop {
                    let w = self.stack.pop().expect("v is on the stack");
                    self.on_stack.remove(w);
                    scc.push(w.to_string());
                    if w == v {
                        break;
                    }
                }
                if scc.len() > 1 {
                    scc.sort();
                    self.out.push(scc);
                }
            }
        }
    }
    let mut t = Tarjan {
        graph,
        index: BTreeMap::new(),
        low: BTreeMap::new(),
        stack: Vec::new(),
        on_stack: BTreeSet::new(),
        out: Vec::new(),
    };
    let nodes: BTreeSet<&str> = graph
        .iter()
        .flat_map(|(a, bs)| std::iter::once(a.as_str()).chain(bs.iter().map(String::as_str)))
        .collect();
    for v in nodes {
        if !t.index.contains_key(v) {
            t.visit(v);
        }
    }
    t.out.sort_by(|a, b| b.len().cmp(&a.len()).then(a.cmp(b)));
    t.out
}

/// What is wrong with `graph` given the allowed back edges; empty when all is well.
///
/// - With the allowed edges removed, any cycle left is a new one (reported with its modules and edges).
/// - An allowed edge that no longer exists, or no longer lies on any cycle, is stale: take it off the list.
pub fn check(graph: &Graph, allowed: &[(&str, &str)]) -> Vec<String> {
    let has = |g: &Graph, a: &str, b: &str| g.get(a).is_some_and(|bs| bs.contains(b));
    let without = |skip: &dyn Fn(&str, &str) -> bool| -> Graph {
        graph
            .iter()
            .map(|(a, bs)| (a.clone(), bs.iter().filter(|b| !skip(a, b)).cloned().collect()))
            .collect()
    };
    let mut problems = Vec::new();
    let layered = without(&|a, b| allowed.contains(&(a, b)));
    let layered = &layered;
    for scc in cycles(layered) {
        let edges: Vec<String> = scc
            .iter()
            .flat_map(|a| scc.iter().filter(move |b| has(layered, a, b)).map(move |b| format!("{a}→{b}")))
            .collect();
        problems.push(format!("new import cycle between {}: {}", scc.join(", "), edges.join(" ")));
    }
    let all_cycles = cycles(graph);
    for &(a, b) in allowed {
        if !has(graph, a, b) {
            problems.push(format!("{a}→{b} is listed but no longer exists: remove it from the list"));
            continue;
        }
        if !all_cycles.iter().any(|scc| scc.iter().any(|m| m == a) && scc.iter().any(|m| m == b)) {
            problems.push(format!("{a}→{b} is listed but closes no cycle any more: remove it from the list"));
        }
    }
    problems
}

/// Blanks out comments, string literals (raw ones too) and char literals, keeping line breaks.
fn strip(src: &str) -> String {
    let s: Vec<char> = src.chars().collect();
    let mut out = String::with_capacity(src.len());
    let mut i = 0;
    let blank = |out: &mut String, c: char| out.push(if c == '\n' { '\n' } else { ' ' });
    while i < s.len() {
        let c = s[i];
        let next = s.get(i + 1).copied();
        if c == '/' && next == Some('/') {
            while i < s.len() && s[i] != '\n' {
                i += 1;
            }
        } else if c == '/' && next == Some('*') {
            let mut depth = 0;
            while i < s.len() {
                if s[i] == '/' && s.get(i + 1) == Some(&'*') {
                    depth += 1;
                    i += 2;
                } else if s[i] == '*' && s.get(i + 1) == Some(&'/') {
                    depth -= 1;
                    i += 2;
                    if depth == 0 {
                        break;
                    }
                } else {
                    blank(&mut out, s[i]);
                    i += 1;
                }
            }
        } else if c == 'r'
            && matches!(next, Some('"') | Some('#'))
            && (i == 0 || !(s[i - 1].is_alphanumeric() || s[i - 1] == '_'))
        {
            let mut j = i + 1;
            while s.get(j) == Some(&'#') {
                j += 1;
            }
            if s.get(j) != Some(&'"') {
                out.push(c);
                i += 1;
                continue;
            }
            let hashes = j - i - 1;
            i = j + 1;
            while i < s.len() {
                if s[i] == '"' && (1..=hashes).all(|k| s.get(i + k) == Some(&'#')) {
                    i += hashes + 1;
                    break;
                }
                blank(&mut out, s[i]);
                i += 1;
            }
        } else if c == '"' {
            i += 1;
            while i < s.len() && s[i] != '"' {
                if s[i] == '\\' {
                    i += 1;
                }
                if let Some(&c) = s.get(i) {
                    blank(&mut out, c);
                }
                i += 1;
            }
            i += 1;
        } else if c == '\'' && (next == Some('\\') || s.get(i + 2) == Some(&'\'')) {
            // A char literal (`'x'`, `'\n'`, `'\u{..}'`); anything else after a quote is a lifetime.
            i += 3;
            if next == Some('\\') {
                while i < s.len() && s[i] != '\'' {
                    i += 1;
                }
                i += 1;
            }
        } else {
            out.push(c);
            i += 1;
        }
    }
    out
}

/// The top-level modules that one file refers to. `path` is the file's module path (`["cdc", "hub"]` for
/// `cdc/hub.rs`, `["state"]` for `state.rs` or `state/mod.rs`); `modules` are the crate's top-level modules.
pub fn references(src: &str, path: &[&str], modules: &BTreeSet<String>) -> BTreeSet<String> {
    let code = strip(src);
    let tokens = tokenize(&code);
    let mut found = BTreeSet::new();
    // Inline `mod x {` blocks open at each brace depth, so `super::` climbs out of them first.
    let mut inline: Vec<usize> = Vec::new();
    let mut depth = 0usize;
    let mut i = 0;
    let is_word = |t: &str| t.chars().next().is_some_and(|c| c.is_alphabetic() || c == '_');
    while i < tokens.len() {
        let t = tokens[i];
        match t {
            "{" => depth += 1,
            "}" => {
                depth = depth.saturating_sub(1);
                if inline.last() == Some(&depth) {
                    inline.pop();
                }
            }
            "mod" if tokens.get(i + 2) == Some(&"{") && tokens.get(i + 1).is_some_and(|n| is_word(n)) => {
                inline.push(depth);
            }
            "crate" if tokens.get(i + 1) == Some(&"::") && (i == 0 || tokens[i - 1] != "$") => {
                collect_heads(&tokens[i + 2..], modules, &mut found);
            }
            "super" if i == 0 || tokens[i - 1] != "::" => {
                let mut ups = 0;
                let mut j = i;
                while tokens.get(j) == Some(&"super") && tokens.get(j + 1) == Some(&"::") {
                    ups += 1;
                    j += 2;
                }
                let here = path.len() + inline.len();
                if ups == here {
                    collect_heads(&tokens[j..], modules, &mut found);
                }
            }
            _ => {}
        }
        i += 1;
    }
    let own = path.first().copied().unwrap_or_default();
    found.remove(own);
    found
}

/// After `crate::`: one module name, or a `{a, b::c, ..}` group whose items each start with one.
fn collect_heads(rest: &[&str], modules: &BTreeSet<String>, found: &mut BTreeSet<String>) {
    match rest.first() {
        Some(&"{") => {
            let mut depth = 0;
            let mut expect_head = true;
            for &t in rest {
                match t {
                    "{" => {
                        depth += 1;
                        expect_head = depth == 1;
                    }
                    "}" => {
                        depth -= 1;
                        if depth == 0 {
                            break;
                        }
                    }
                    "," => expect_head = depth == 1,
                    name => {
                        if expect_head && modules.contains(name) {
                            found.insert(name.to_string());
                        }
                        expect_head = false;
                    }
                }
            }
        }
        Some(name) if modules.contains(*name) => {
            found.insert(name.to_string());
        }
        _ => {}
    }
}

/// Words, `::`, and single punctuation characters.
fn tokenize(code: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let b = code.as_bytes();
    let mut i = 0;
    while i < b.len() {
        let c = b[i];
        if c.is_ascii_whitespace() {
            i += 1;
        } else if c.is_ascii_alphanumeric() || c == b'_' {
            let start = i;
            while i < b.len() && (b[i].is_ascii_alphanumeric() || b[i] == b'_') {
                i += 1;
            }
            out.push(&code[start..i]);
        } else if c == b':' && b.get(i + 1) == Some(&b':') {
            out.push("::");
            i += 2;
        } else {
            let len = code[i..].chars().next().map_or(1, char::len_utf8);
            out.push(&code[i..i + len]);
            i += len;
        }
    }
    out
}

/// The module graph of the crate whose `src` is `root`: top-level modules are `x.rs` files (other than
/// `lib.rs` and `main.rs`) and `x/` directories.
pub fn scan(root: &Path) -> Graph {
    let mut modules = BTreeSet::new();
    for entry in std::fs::read_dir(root).expect("read src") {
        let path = entry.expect("dir entry").path();
        let stem = path.file_stem().and_then(|s| s.to_str()).unwrap_or_default().to_string();
        if path.is_dir() || (path.extension().is_some_and(|e| e == "rs") && stem != "lib" && stem != "main") {
            modules.insert(stem);
        }
    }
    let mut graph = Graph::new();
    for module in &modules {
        let mut files = Vec::new();
        let file = root.join(format!("{module}.rs"));
        if file.is_file() {
            files.push(file);
        }
        rust_files(&root.join(module), &mut files);
        let refs = graph.entry(module.clone()).or_default();
        for file in files {
            let rel = file.strip_prefix(root).expect("under src").with_extension("");
            let mut path: Vec<&str> = rel.iter().filter_map(|p| p.to_str()).collect();
            if path.last() == Some(&"mod") {
                path.pop();
            }
            let src = std::fs::read_to_string(&file).expect("read source");
            refs.extend(references(&src, &path, &modules));
        }
    }
    graph
}

/// Lines of code in one source file: lines that hold something besides comments and whitespace,
/// outside items marked `#[cfg(test)]` (a test module inline, or a test-only function or import).
pub fn code_lines(src: &str) -> usize {
    let code = strip(src);
    let mut count = 0;
    // While inside a `#[cfg(test)]` item: the brace depth it started at, and whether its body opened.
    let mut skipping: Option<(usize, bool)> = None;
    let mut depth = 0usize;
    for line in code.lines() {
        let text = line.trim();
        if skipping.is_none() && text.starts_with("#[cfg(test)]") {
            skipping = Some((depth, false));
        }
        let counted = skipping.is_none() && !text.is_empty();
        for c in text.chars() {
            match c {
                '{' => {
                    depth += 1;
                    if let Some((_, opened)) = skipping.as_mut() {
                        *opened = true;
                    }
                }
                '}' => depth = depth.saturating_sub(1),
                ';' if skipping.is_some_and(|(at, opened)| !opened && depth == at) => skipping = None,
                _ => {}
            }
        }
        if skipping.is_some_and(|(at, opened)| opened && depth == at) {
            skipping = None;
        }
        count += usize::from(counted);
    }
    count
}

/// Whether a file under `src` holds only tests (by the names this workspace gives them).
fn is_test_file(path: &Path) -> bool {
    let stem = path.file_stem().and_then(|s| s.to_str()).unwrap_or_default();
    stem == "tests" || stem == "proptests" || stem.ends_with("_test") || stem.ends_with("_tests")
}

fn rust_files(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else { return };
    let mut entries: Vec<_> = entries.map(|e| e.expect("dir entry").path()).collect();
    entries.sort();
    for path in entries {
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn graph(edges: &[(&str, &str)]) -> Graph {
        let mut g = Graph::new();
        for &(a, b) in edges {
            g.entry(a.to_string()).or_default().insert(b.to_string());
            g.entry(b.to_string()).or_default();
        }
        g
    }

    fn names(list: &[&str]) -> BTreeSet<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn finds_components_largest_first() {
        let g = graph(&[("a", "b"), ("b", "a"), ("c", "d"), ("d", "e"), ("e", "c"), ("e", "f"), ("f", "f")]);
        assert_eq!(cycles(&g), vec![vec!["c", "d", "e"], vec!["a", "b"]]);
        assert!(cycles(&graph(&[("a", "b"), ("b", "c"), ("a", "c")])).is_empty());
    }

    #[test]
    fn an_acyclic_graph_with_no_list_passes() {
        assert!(check(&graph(&[("a", "b"), ("b", "c")]), &[]).is_empty());
    }

    #[test]
    fn a_listed_back_edge_passes_and_a_new_one_fails() {
        let g = graph(&[("a", "b"), ("b", "c"), ("c", "a")]);
        assert!(check(&g, &[("c", "a")]).is_empty());
        let g = graph(&[("a", "b"), ("b", "c"), ("c", "a"), ("b", "a")]);
        let problems = check(&g, &[("c", "a")]);
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert!(problems[0].contains("new import cycle between a, b"), "{problems:?}");
    }

    #[test]
    fn a_listed_edge_that_is_gone_or_harmless_fails() {
        let g = graph(&[("a", "b")]);
        assert!(check(&g, &[("b", "a")])[0].contains("no longer exists"));
        let g = graph(&[("a", "b"), ("c", "a")]);
        assert!(check(&g, &[("c", "a")])[0].contains("closes no cycle"));
        // Two listed edges on one cycle both stay listed while the cycle exists.
        let g = graph(&[("a", "b"), ("b", "c"), ("c", "a")]);
        assert!(check(&g, &[("b", "c"), ("c", "a")]).is_empty());
    }

    #[test]
    fn reads_crate_paths_groups_and_super_chains() {
        let modules = names(&["alpha", "beta", "gamma", "delta", "eps", "zeta"]);
        let src = r#"
            use crate::alpha::Thing;
            use crate::{beta, gamma::{X, Y}};
            // use crate::delta::Commented;
            /// [`crate::delta`] in a doc link
            const S: &str = "crate::delta::InAString";
            fn f<'a>(x: &'a str) -> char { let _ = super::super::eps::g(); let _ = '\''; '{' }
            mod tests {
                use super::*;
                use super::super::super::zeta;
            }
        "#;
        assert_eq!(
            references(src, &["own", "child"], &modules),
            names(&["alpha", "beta", "eps", "gamma", "zeta"])
        );
        // From `alpha.rs`, a `crate::alpha` path is the module itself.
        assert_eq!(
            references("use crate::alpha::X; use crate::beta;", &["alpha"], &modules),
            names(&["beta"])
        );
    }

    #[test]
    fn counts_code_lines_outside_comments_and_tests() {
        let src = r#"
            //! A module doc.
            use std::fmt; // a trailing comment

            /* a block
               comment */
            fn f() {
                let s = "// not a comment";
            }
            #[cfg(test)]
            use std::collections::HashMap;
            #[cfg(test)]
            mod tests {
                fn g() {
                    if true { }
                }
            }
            const X: u8 = 1;
        "#;
        assert_eq!(code_lines(src), 5);
        assert!(is_test_file(Path::new("presence/replica_test.rs")));
        assert!(is_test_file(Path::new("pgoutput/fuzz_tests.rs")));
        assert!(!is_test_file(Path::new("cdc/tests_helper_free.rs")));
    }

    /// Every crate's sources: no file over the bound but the known ones, and the known ones only shrink.
    #[test]
    fn no_source_file_is_over_the_bound() {
        let workspace = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        let mut problems = Vec::new();
        for krate in ["proto", "cluster", "node", "loadtest"] {
            let mut files = Vec::new();
            rust_files(&workspace.join(krate).join("src"), &mut files);
            for file in files.iter().filter(|f| !is_test_file(f)) {
                let name = file
                    .strip_prefix(&workspace)
                    .expect("under the workspace")
                    .to_string_lossy()
                    .into_owned();
                let lines = code_lines(&std::fs::read_to_string(file).expect("read source"));
                let known = KNOWN_LARGE.iter().any(|&(known, _)| known == name);
                if lines > MAX_CODE_LINES && !known {
                    problems.push(format!(
                        "{name}: {lines} lines of code (at most {MAX_CODE_LINES}): split it by concept"
                    ));
                } else if lines <= MAX_CODE_LINES && known {
                    problems
                        .push(format!("{name}: {lines} lines of code now fits: remove it from KNOWN_LARGE"));
                }
            }
        }
        for &(known, _) in KNOWN_LARGE {
            if !workspace.join(known).is_file() {
                problems.push(format!("{known} is listed in KNOWN_LARGE but does not exist"));
            }
        }
        assert!(problems.is_empty(), "{}", problems.join("\n"));
    }

    /// The cluster crate has no import cycle between its top-level modules (and no list of known ones).
    #[test]
    fn cluster_src_has_no_import_cycles() {
        let graph = scan(&Path::new(env!("CARGO_MANIFEST_DIR")).join("../cluster/src"));
        assert!(graph.len() > 10, "the scan found the cluster's modules: {graph:?}");
        let problems = check(&graph, &[]);
        assert!(problems.is_empty(), "{}", problems.join("\n"));
    }

    /// The README draws each crate's modules in levels (`  <level>  <module> ..` under a line naming
    /// the crate's `src`): every module is drawn once, and imports only modules on lower levels.
    #[test]
    fn the_readme_draws_the_real_layers() {
        let workspace = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        let readme = std::fs::read_to_string(workspace.join("README.md")).expect("README");
        let mut problems = Vec::new();
        for src in ["node/src", "cluster/src"] {
            let graph = scan(&workspace.join(src));
            let mut level: BTreeMap<String, usize> = BTreeMap::new();
            let drawn = readme.lines().skip_while(|line| *line != src).skip(1);
            for line in drawn.take_while(|line| line.starts_with("  ")) {
                let mut words = line.split_whitespace();
                let at: usize = words.next().and_then(|w| w.parse().ok()).expect("a level number first");
                for module in words {
                    if level.insert(module.to_string(), at).is_some() {
                        problems.push(format!("{src}: {module} is drawn twice"));
                    }
                }
            }
            for (module, imports) in graph.iter().filter(|(m, _)| m.as_str() != "layers") {
                let Some(&at) = level.get(module) else {
                    problems.push(format!("{src}: {module} is not drawn"));
                    continue;
                };
                for import in imports {
                    if level.get(import).is_some_and(|&below| below >= at) {
                        problems.push(format!("{src}: {module} (level {at}) imports {import}, not below it"));
                    }
                }
            }
            problems.extend(
                level
                    .keys()
                    .filter(|m| !graph.contains_key(*m))
                    .map(|m| format!("{src}: {m} is drawn but gone")),
            );
        }
        assert!(problems.is_empty(), "README.md's layers:\n{}", problems.join("\n"));
    }

    /// The crate's own graph: no cycles beyond the known ones, and the known ones only shrink.
    #[test]
    fn node_src_has_no_new_import_cycles() {
        let graph = scan(&Path::new(env!("CARGO_MANIFEST_DIR")).join("src"));
        let allowed: Vec<(&str, &str)> = KNOWN_BACK_EDGES.iter().map(|&(a, b, _)| (a, b)).collect();
        assert_eq!(graph.get("vocab"), Some(&BTreeSet::new()), "vocab must depend on nothing in the crate");
        let problems = check(&graph, &allowed);
        let all = cycles(&graph);
        let biggest = all.first().map_or(0, Vec::len);
        eprintln!("import cycles: {all:?}; {} known back edges", allowed.len());
        assert!(problems.is_empty(), "biggest cycle: {biggest} modules\n{}", problems.join("\n"));
    }
}

//! Maps a key path inside an experiment file (e.g. `stages.pit.sweep.lambda`) to the file,
//! line and column where it is written, using the spans toml_edit keeps.

use std::ops::Range;

use toml_edit::{Document, Item, Value};

/// 1-based line and column (in characters) of byte `offset` in `text`.
pub fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let offset = offset.min(text.len());
    let before = &text[..text.floor_char_boundary(offset)];
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map(|i| i + 1).unwrap_or(0);
    let col = before[line_start..].chars().count() + 1;
    (line, col)
}

/// Byte span of the deepest element of `path` found in the document: the key for a table
/// entry, the value for an array element. `None` only if the text does not parse.
pub fn locate(text: &str, path: &[String]) -> Option<Range<usize>> {
    let doc = Document::parse(text).ok()?;
    let mut best: Option<Range<usize>> = Some(0..0);
    let mut item: Item = Item::Table(doc.as_table().clone());
    for seg in path {
        let next: Option<(Option<Range<usize>>, Item)> = match &item {
            Item::Table(t) => t
                .get_key_value(seg)
                .map(|(k, v)| (k.span().or_else(|| v.span()), v.clone())),
            Item::Value(Value::InlineTable(t)) => t
                .get_key_value(seg)
                .map(|(k, v)| (k.span().or_else(|| v.span()), v.clone())),
            Item::Value(Value::Array(a)) => seg
                .parse::<usize>()
                .ok()
                .and_then(|i| a.get(i))
                .map(|v| (v.span(), Item::Value(v.clone()))),
            Item::ArrayOfTables(a) => seg
                .parse::<usize>()
                .ok()
                .and_then(|i| a.get(i))
                .map(|t| (t.span(), Item::Table(t.clone()))),
            _ => None,
        };
        match next {
            Some((span, it)) => {
                if span.is_some() {
                    best = span;
                }
                item = it;
            }
            None => break,
        }
    }
    best
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> Vec<String> {
        s.split('.').map(String::from).collect()
    }

    #[test]
    fn finds_keys_in_tables_inline_tables_and_arrays() {
        let text = "[experiment]\nname = \"x\"\n\n[stages.a]\nkind = \"command\"\nsweep = { n = [1, \"two\"] }\n";
        let at = |path: &str| {
            let r = locate(text, &p(path)).unwrap();
            line_col(text, r.start)
        };
        assert_eq!(at("experiment.name"), (2, 1));
        assert_eq!(at("stages.a.kind"), (5, 1));
        assert_eq!(at("stages.a.sweep.n"), (6, 11));
        assert_eq!(at("stages.a.sweep.n.1"), (6, 19));
        // missing key: falls back to the deepest existing element
        assert_eq!(at("stages.a.sweep.zzz"), (6, 1));
    }
}

//! Markdown tables that render on GitHub: a header, an alignment row, escaped cells.

/// Column alignment.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Align {
    Left,
    Right,
}

/// A Markdown table built row by row.
#[derive(Clone, Debug, Default)]
pub struct Table {
    header: Vec<(String, Align)>,
    rows: Vec<Vec<String>>,
}

impl Table {
    pub fn new(columns: &[(&str, Align)]) -> Self {
        Self {
            header: columns.iter().map(|(n, a)| (n.to_string(), *a)).collect(),
            rows: Vec::new(),
        }
    }

    /// Adds a row; missing cells render empty, extra cells are an error of the caller and
    /// are dropped.
    pub fn row(&mut self, cells: Vec<String>) -> &mut Self {
        let mut cells = cells;
        cells.resize(self.header.len(), String::new());
        self.rows.push(cells);
        self
    }

    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    /// The table as GitHub-flavoured Markdown, ending with a newline.
    pub fn render(&self) -> String {
        let mut out = String::new();
        out.push('|');
        for (name, _) in &self.header {
            out.push(' ');
            out.push_str(&escape(name));
            out.push_str(" |");
        }
        out.push_str("\n|");
        for (_, align) in &self.header {
            out.push_str(match align {
                Align::Left => " --- |",
                Align::Right => " ---: |",
            });
        }
        out.push('\n');
        for row in &self.rows {
            out.push('|');
            for cell in row {
                out.push(' ');
                out.push_str(&escape(cell));
                out.push_str(" |");
            }
            out.push('\n');
        }
        out
    }
}

/// Escapes characters that would break a table cell (pipes, newlines).
pub fn escape(s: &str) -> String {
    s.replace('\\', "\\\\")
        .replace('|', "\\|")
        .replace(['\n', '\r'], " ")
}

/// A count with thousands separators: 24908 → "24,908".
pub fn thousands(n: u64) -> String {
    let s = n.to_string();
    let mut out = String::with_capacity(s.len() + s.len() / 3);
    for (i, ch) in s.chars().enumerate() {
        if i > 0 && (s.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(ch);
    }
    out
}

/// A fraction as a percentage with two decimals: 0.91884 → "91.88 %".
pub fn percent(x: f64) -> String {
    format!("{:.2} %", 100.0 * x)
}

/// A signed difference in percentage points: -0.0024 → "−0.24".
pub fn points_delta(x: f64) -> String {
    let v = 100.0 * x;
    if v.abs() < 0.005 {
        "±0.00".to_string()
    } else if v < 0.0 {
        format!("−{:.2}", -v)
    } else {
        format!("+{v:.2}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_github_table() {
        let mut t = Table::new(&[("model", Align::Left), ("params", Align::Right)]);
        t.row(vec!["pit[lambda=1e-5]".into(), thousands(24908)]);
        t.row(vec!["a|b".into()]);
        assert_eq!(
            t.render(),
            "| model | params |\n| --- | ---: |\n| pit[lambda=1e-5] | 24,908 |\n| a\\|b |  |\n"
        );
    }

    #[test]
    fn number_formats() {
        assert_eq!(thousands(0), "0");
        assert_eq!(thousands(999), "999");
        assert_eq!(thousands(1000), "1,000");
        assert_eq!(thousands(1234567), "1,234,567");
        assert_eq!(percent(0.91884), "91.88 %");
        assert_eq!(points_delta(-0.0024), "−0.24");
        assert_eq!(points_delta(0.0105), "+1.05");
        assert_eq!(points_delta(0.00001), "±0.00");
    }
}

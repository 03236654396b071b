//! Query results as a text table, JSON or CSV.

use std::fmt::Write as _;

/// Output format of a query (`--output`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    Table,
    Json,
    Csv,
}

/// Rows of string cells under named columns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Table {
    pub columns: Vec<&'static str>,
    pub rows: Vec<Vec<String>>,
}

impl Table {
    pub fn new(columns: &[&'static str]) -> Table {
        Table { columns: columns.to_vec(), rows: Vec::new() }
    }

    /// Appends a row; it must have one cell per column.
    pub fn push(&mut self, row: Vec<String>) {
        debug_assert_eq!(row.len(), self.columns.len());
        self.rows.push(row);
    }

    /// Renders the table in `format`, ending with a newline.
    pub fn render(&self, format: Format) -> String {
        match format {
            Format::Table => self.render_text(),
            Format::Json => self.render_json(),
            Format::Csv => self.render_csv(),
        }
    }

    fn render_text(&self) -> String {
        let mut table = comfy_table::Table::new();
        table.load_preset(comfy_table::presets::NOTHING);
        table.set_header(self.columns.iter().map(|c| c.to_uppercase()));
        for row in &self.rows {
            table.add_row(row);
        }
        format!("{table}\n")
    }

    /// Renders an array of objects, one per row, keyed by column name.
    fn render_json(&self) -> String {
        let rows: Vec<serde_json::Value> = self
            .rows
            .iter()
            .map(|row| {
                let fields = self.columns.iter().zip(row).map(|(c, v)| ((*c).to_owned(), serde_json::json!(v)));
                serde_json::Value::Object(fields.collect())
            })
            .collect();
        // Serializing a tree of strings cannot fail.
        serde_json::to_string_pretty(&rows).expect("JSON encodes") + "\n"
    }

    /// RFC 4180: a header line, CRLF line ends, fields quoted when they need it.
    fn render_csv(&self) -> String {
        let mut text = String::new();
        let header: Vec<String> = self.columns.iter().map(|c| (*c).to_owned()).collect();
        for row in std::iter::once(&header).chain(&self.rows) {
            let fields: Vec<String> = row.iter().map(|field| csv_field(field)).collect();
            let _ = write!(text, "{}\r\n", fields.join(","));
        }
        text
    }
}

fn csv_field(field: &str) -> String {
    if field.contains([',', '"', '\r', '\n']) {
        format!("\"{}\"", field.replace('"', "\"\""))
    } else {
        field.to_owned()
    }
}

/// Formats microseconds since the Unix epoch as RFC 3339 in UTC.
pub fn time(micros: i64) -> String {
    let nanos = i128::from(micros) * 1_000;
    time::OffsetDateTime::from_unix_timestamp_nanos(nanos)
        .ok()
        .and_then(|t| t.format(&time::format_description::well_known::Rfc3339).ok())
        .unwrap_or_else(|| format!("{micros}µs"))
}

/// Parses an RFC 3339 time into microseconds since the Unix epoch.
pub fn parse_time(text: &str) -> Result<i64, String> {
    let parsed = time::OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339)
        .map_err(|e| format!("time {text:?} is not RFC 3339, such as 2026-12-04T22:00:00Z: {e}"))?;
    i64::try_from(parsed.unix_timestamp_nanos() / 1_000).map_err(|_| format!("time {text:?} is out of range"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_quotes_special_fields() {
        let mut table = Table::new(&["name", "note"]);
        table.push(vec!["a,b".to_owned(), "say \"hi\"".to_owned()]);
        assert_eq!(table.render(Format::Csv), "name,note\r\n\"a,b\",\"say \"\"hi\"\"\"\r\n");
    }

    #[test]
    fn time_round_trips() {
        let micros = parse_time("2026-12-04T22:00:00.5Z").unwrap();
        assert_eq!(time(micros), "2026-12-04T22:00:00.5Z");
    }
}

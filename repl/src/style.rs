//! Colored output for terminals, plain text everywhere else (pipes, files, `NO_COLOR`).

/// How to style output.
#[derive(Clone, Copy, Debug)]
pub struct Style {
    color: bool,
}

impl Style {
    /// No escapes at all.
    pub fn plain() -> Style {
        Style { color: false }
    }

    /// Colors when stdout is a terminal and `NO_COLOR` is unset.
    pub fn detect() -> Style {
        Style {
            color: crate::output::use_color(),
        }
    }

    /// Whether escapes are written.
    pub fn colored(&self) -> bool {
        self.color
    }

    fn paint(&self, code: &str, text: &str) -> String {
        if self.color {
            format!("\x1b[{code}m{text}\x1b[0m")
        } else {
            text.to_owned()
        }
    }

    pub fn allow(&self, text: &str) -> String {
        self.paint("1;32", text)
    }

    pub fn deny(&self, text: &str) -> String {
        self.paint("1;31", text)
    }

    pub fn warn(&self, text: &str) -> String {
        self.paint("33", text)
    }

    pub fn id(&self, text: &str) -> String {
        self.paint("36", text)
    }

    /// A unified diff with added lines green and removed lines red.
    pub fn diff(&self, diff: &str) -> String {
        if !self.color {
            return diff.to_owned();
        }
        diff.lines()
            .map(|l| {
                let styled = if l.starts_with('+') && !l.starts_with("+++") {
                    self.paint("32", l)
                } else if l.starts_with('-') && !l.starts_with("---") {
                    self.paint("31", l)
                } else if l.starts_with("@@") {
                    self.paint("36", l)
                } else {
                    l.to_owned()
                };
                styled + "\n"
            })
            .collect()
    }
}

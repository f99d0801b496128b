//! A project's fragment names in one allocation, shared by the machine and the write that
//! stores them.
//!
//! herzog keeps every fragment of every project in memory. A `String` per name cost 56 bytes
//! (the `String`, and a heap block of at least 32) for names of a dozen bytes, and submitting
//! held two copies of each until the project was stored: at a million fragments, most of
//! herzog's memory (BENCHMARKS.md). Here a name costs its bytes and one offset.

/// Names in order; the `i`th is the `i`th fragment's.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(crate) struct Names {
    text: String,
    /// Where each name ends in `text`.
    ends: Vec<usize>,
}

impl Names {
    /// The `i`th name. Panics past the end, as indexing does.
    pub(crate) fn get(&self, i: usize) -> &str {
        let start = if i == 0 { 0 } else { self.ends[i - 1] };
        &self.text[start..self.ends[i]]
    }

    /// Adds a name at the end.
    pub(crate) fn push(&mut self, name: &str) {
        self.text.push_str(name);
        self.ends.push(self.text.len());
    }

    pub(crate) fn len(&self) -> usize {
        self.ends.len()
    }

    #[cfg(test)]
    pub(crate) fn is_empty(&self) -> bool {
        self.ends.is_empty()
    }

    pub(crate) fn iter(&self) -> impl ExactSizeIterator<Item = &str> + '_ {
        (0..self.len()).map(|i| self.get(i))
    }

    /// Where `name` is, if it is one of these.
    pub(crate) fn position(&self, name: &str) -> Option<usize> {
        self.iter().position(|n| n == name)
    }
}

impl<S: AsRef<str>> FromIterator<S> for Names {
    fn from_iter<I: IntoIterator<Item = S>>(iter: I) -> Self {
        let iter = iter.into_iter();
        let mut names = Names {
            text: String::new(),
            ends: Vec::with_capacity(iter.size_hint().0),
        };
        for name in iter {
            names.push(name.as_ref());
        }
        names.text.shrink_to_fit();
        names
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_come_back_as_they_went_in() {
        let given = ["chr1.fa", "", "chr10.fa", "é.txt"];
        let names: Names = given.iter().collect();
        assert_eq!(names.len(), 4);
        assert_eq!(names.iter().collect::<Vec<_>>(), given);
        assert_eq!(names.get(2), "chr10.fa");
        assert_eq!(names.position("é.txt"), Some(3));
        assert_eq!(names.position("chr1"), None);
        assert!(Names::default().is_empty());
    }
}

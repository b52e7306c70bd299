//! The string table: function names and source files, each stored once.

use std::collections::HashMap;
use std::sync::Arc;

/// Index of a string in a [`StringTable`].
pub type StrId = u32;

/// Interned strings.
#[derive(Debug, Clone, Default)]
pub struct StringTable {
    strings: Vec<Arc<str>>,
    index: HashMap<Arc<str>, StrId>,
}

impl StringTable {
    /// The id of `s`, adding it when new.
    pub fn intern(&mut self, s: &str) -> StrId {
        if let Some(&id) = self.index.get(s) {
            return id;
        }
        let id = self.strings.len() as StrId;
        let a: Arc<str> = Arc::from(s);
        self.strings.push(Arc::clone(&a));
        self.index.insert(a, id);
        id
    }

    /// The id of `s` if it was interned.
    pub fn lookup(&self, s: &str) -> Option<StrId> {
        self.index.get(s).copied()
    }

    /// The string of an id (`"?"` for an id this table never gave out).
    pub fn get(&self, id: StrId) -> &str {
        self.strings.get(id as usize).map_or("?", |s| &**s)
    }

    /// Number of strings.
    pub fn len(&self) -> usize {
        self.strings.len()
    }

    /// True when empty.
    pub fn is_empty(&self) -> bool {
        self.strings.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn interns_once() {
        let mut t = StringTable::default();
        let a = t.intern("start_kernel");
        assert_eq!(t.intern("start_kernel"), a);
        assert_ne!(t.intern("setup_arch"), a);
        assert_eq!(t.get(a), "start_kernel");
        assert_eq!(t.lookup("setup_arch"), Some(1));
        assert_eq!(t.get(99), "?");
    }
}

//! Interned jail and origin names: the same few names repeat across hundreds of thousands of
//! holdings and replay-guard entries, so each is stored once and referred to by a small number.

use std::collections::HashMap;
use std::sync::Arc;

/// A name table.
#[derive(Default)]
pub struct Names {
    ids: HashMap<Arc<str>, u32>,
    names: Vec<Arc<str>>,
}

impl Names {
    /// The number of `name`, adding it when new.
    pub fn id(&mut self, name: &str) -> u32 {
        if let Some(id) = self.ids.get(name) {
            return *id;
        }
        let id = self.names.len() as u32;
        let name: Arc<str> = Arc::from(name);
        self.names.push(name.clone());
        self.ids.insert(name, id);
        id
    }

    /// The number of `name`, if known.
    pub fn find(&self, name: &str) -> Option<u32> {
        self.ids.get(name).copied()
    }

    /// How many names there are (numbers run from 0 below this).
    pub fn count(&self) -> usize {
        self.names.len()
    }

    /// The name of a number handed out by [`Names::id`].
    pub fn name(&self, id: u32) -> &str {
        &self.names[id as usize]
    }
}

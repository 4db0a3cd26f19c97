//! [`RecordIds`]: a tenant's record ids, each with the SHA-256 of the record as first sent,
//! held so that copying them is cheap.
//!
//! The state is copied whole for every Raft snapshot, with applying held up for the copy. A
//! single map of a million ids copied entry by entry took up to 350 ms under ingest load
//! (benches/README.md, "Record ingest"). The ids are spread by a hash of the id over
//! [`SHARDS`] maps, each behind an `Arc`: a copy shares every map, and a map is copied only
//! when it is next written while shared — a few hundred ids at a time, spread over the next
//! entries applied, instead of all at once while applying waits.
//!
//! The hash only decides where an id sits in memory: every view that leaves the process
//! ([`RecordIds::sorted`], the snapshot encoding) is in id order, so replicas agree whatever
//! the shard layout.

use std::hash::{BuildHasher, RandomState};
use std::sync::Arc;

use hashbrown::HashTable;
use hashbrown::hash_table::{Entry, VacantEntry};

/// SHA-256 of a record's text as first sent.
pub(crate) type Digest = [u8; 32];

/// How many maps the ids are spread over. A batch of 100 records touches about 100 of them;
/// at a million ids each holds ~250, so the first batch after a copy copies ~25,000 ids.
pub(crate) const SHARDS: usize = 4096;

/// One id held, with the hash its shard files it by.
#[derive(Debug, Clone)]
struct Held {
    /// `hasher.hash_one(id)`, kept: a shard that grows moves its ids by this, without hashing
    /// their text again (rehashing every id with SipHash as a shard grew was ~4 % of a node's
    /// CPU under ingest load), and a lookup compares it before it reads an id's bytes. Eight
    /// bytes more per id held.
    hash: u64,
    id: String,
    /// `None` for records committed before digests were kept.
    digest: Option<Digest>,
}

/// One shard: a hash table, not a B-tree: ingest looks every record's id up, and a B-tree of a
/// few hundred ids costs a string comparison (a cache miss on the id's bytes) per level — with
/// the `memcmp` behind it ~9 % of the nodes' CPU in an ingest profile, and 4–13 % more
/// records/s without it (benches/README.md, "Record ingest"). Order is
/// [`RecordIds::sorted`]'s job.
type Shard = HashTable<Held>;

/// A tenant's record ids and digests; see the module documentation.
#[derive(Debug, Clone, Default)]
pub(crate) struct RecordIds {
    /// Empty until the first id; then [`SHARDS`] slots, `None` for a shard with no id yet.
    shards: Vec<Option<Arc<Shard>>>,
    len: usize,
    /// Keyed SipHash with this process's random keys (std's `HashMap` default): ids come from
    /// agents, so a hash an agent could predict would let it fill one bucket (HashDoS). Copies
    /// share the keys; the hashes never leave the process.
    hasher: RandomState,
}

/// Which shard holds `id`: FNV-1a, fixed here so the layout never depends on a library's
/// hasher.
fn shard_of(id: &str) -> usize {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in id.bytes() {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    // The remainder is below SHARDS, which fits a usize.
    usize::try_from(hash % SHARDS as u64).unwrap_or(0)
}

impl RecordIds {
    /// The digest held for `id`: `None` if the id is not held, `Some(None)` if it is held
    /// without a digest.
    pub(crate) fn get(&self, id: &str) -> Option<Option<Digest>> {
        let shard = self.shards.get(shard_of(id))?.as_ref()?;
        let hash = self.hasher.hash_one(id);
        shard.find(hash, |held| held.hash == hash && held.id == id).map(|held| held.digest)
    }

    /// Whether `id` is held.
    pub(crate) fn contains(&self, id: &str) -> bool {
        self.get(id).is_some()
    }

    /// Holds `id` with `digest`; returns `false` (and changes nothing) if it was held already.
    pub(crate) fn insert(&mut self, id: String, digest: Option<Digest>) -> bool {
        match self.slot(id) {
            Slot::Held(_) => false,
            Slot::Free(free) => {
                free.hold(digest);
                true
            }
        }
    }

    /// The place of `id`, found once: the digest held for it, or the free place to hold it in
    /// (ingest looks an id up and holds it only if the record is accepted).
    pub(crate) fn slot(&mut self, id: String) -> Slot<'_> {
        if self.shards.is_empty() {
            self.shards = vec![None; SHARDS];
        }
        let index = shard_of(&id);
        let hash = self.hasher.hash_one(id.as_str());
        let Self { shards, len, .. } = self;
        // `shards` has SHARDS slots and `index` is below SHARDS; the fallback is never taken.
        let Some(slot) = shards.get_mut(index) else {
            return Slot::Held(None);
        };
        let shard = Arc::make_mut(slot.get_or_insert_with(Default::default));
        match shard.entry(hash, |held| held.hash == hash && held.id == id, |held| held.hash) {
            Entry::Occupied(held) => Slot::Held(held.get().digest),
            Entry::Vacant(free) => Slot::Free(FreeSlot { free, hash, id, len }),
        }
    }

    /// Stops holding `id`; returns its digest if it was held.
    pub(crate) fn remove(&mut self, id: &str) -> Option<Option<Digest>> {
        let hash = self.hasher.hash_one(id);
        let slot = self.shards.get_mut(shard_of(id))?.as_mut()?;
        let eq = |held: &Held| held.hash == hash && held.id == id;
        // Look first: a shard shared with a copy is copied only if it changes.
        slot.find(hash, eq)?;
        let (removed, _) = Arc::make_mut(slot).find_entry(hash, eq).ok()?.remove();
        self.len -= 1;
        Some(removed.digest)
    }

    /// Every id with its digest, in id order.
    pub(crate) fn sorted(&self) -> Vec<(&String, &Option<Digest>)> {
        let mut all: Vec<(&String, &Option<Digest>)> = self
            .shards
            .iter()
            .flatten()
            .flat_map(|shard| shard.iter())
            .map(|held| (&held.id, &held.digest))
            .collect();
        all.sort_unstable_by(|a, b| a.0.cmp(b.0));
        all
    }
}

/// Where an id is, from [`RecordIds::slot`].
#[derive(Debug)]
pub(crate) enum Slot<'a> {
    /// The id is held, with this digest.
    Held(Option<Digest>),
    /// The id is not held; [`FreeSlot::hold`] holds it.
    Free(FreeSlot<'a>),
}

/// The free place of an id not held yet.
#[derive(Debug)]
pub(crate) struct FreeSlot<'a> {
    free: VacantEntry<'a, Held>,
    hash: u64,
    id: String,
    len: &'a mut usize,
}

impl FreeSlot<'_> {
    /// Holds the id with `digest`.
    pub(crate) fn hold(self, digest: Option<Digest>) {
        self.free.insert(Held { hash: self.hash, id: self.id, digest });
        *self.len += 1;
    }
}

impl PartialEq for RecordIds {
    fn eq(&self, other: &Self) -> bool {
        self.len == other.len && self.sorted() == other.sorted()
    }
}

impl FromIterator<(String, Option<Digest>)> for RecordIds {
    fn from_iter<I: IntoIterator<Item = (String, Option<Digest>)>>(iter: I) -> Self {
        let mut ids = RecordIds::default();
        for (id, digest) in iter {
            ids.insert(id, digest);
        }
        ids
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use proptest::prelude::*;

    use super::*;

    #[derive(Debug, Clone)]
    enum Op {
        Insert(u16, u8),
        Remove(u16),
        /// Take a copy, as a snapshot does, and keep it to check later.
        Copy,
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            4 => (0u16..3000, any::<u8>()).prop_map(|(id, d)| Op::Insert(id, d)),
            2 => (0u16..3000).prop_map(Op::Remove),
            1 => Just(Op::Copy),
        ]
    }

    proptest! {
        /// Against a plain map: the same answers after any inserts and removals, and every copy
        /// taken along the way keeps exactly what was held when it was taken.
        #[test]
        fn behaves_as_one_map_and_copies_never_change(ops in prop::collection::vec(op(), 1..400)) {
            let mut ids = RecordIds::default();
            let mut model: BTreeMap<String, Option<Digest>> = BTreeMap::new();
            let mut copies: Vec<(RecordIds, BTreeMap<String, Option<Digest>>)> = Vec::new();
            for op in ops {
                match op {
                    Op::Insert(id, d) => {
                        let (id, digest) = (format!("rec-{id}"), (d % 3 != 0).then_some([d; 32]));
                        let fresh = !model.contains_key(&id);
                        if fresh {
                            model.insert(id.clone(), digest);
                        }
                        prop_assert_eq!(ids.insert(id, digest), fresh);
                    }
                    Op::Remove(id) => {
                        let id = format!("rec-{id}");
                        prop_assert_eq!(ids.remove(&id), model.remove(&id));
                    }
                    Op::Copy => copies.push((ids.clone(), model.clone())),
                }
                prop_assert_eq!(ids.len, model.len());
            }
            let expected: Vec<_> = model.iter().collect();
            prop_assert_eq!(ids.sorted(), expected);
            for id in (0..3000).map(|i| format!("rec-{i}")) {
                prop_assert_eq!(ids.get(&id), model.get(&id).copied());
            }
            for (copy, then) in copies {
                let then_sorted: Vec<_> = then.iter().collect();
                prop_assert_eq!(copy.sorted(), then_sorted);
                prop_assert_eq!(copy.len, then.len());
            }
        }
    }

    #[test]
    fn the_layout_is_fixed() {
        // Replicas and releases must agree on nothing here but ids, yet a fixed layout keeps
        // memory use reproducible: FNV-1a of "" is its offset basis.
        assert_eq!(shard_of(""), usize::try_from(0xcbf2_9ce4_8422_2325_u64 % SHARDS as u64).unwrap());
        let ids: RecordIds = [("b".to_owned(), None), ("a".to_owned(), Some([1; 32]))].into_iter().collect();
        assert_eq!(ids.sorted(), vec![(&"a".to_owned(), &Some([1; 32])), (&"b".to_owned(), &None)]);
        assert_eq!(ids, ids.clone());
    }
}

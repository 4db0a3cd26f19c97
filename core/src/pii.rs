//! PII kinds (the detector is being written alongside).
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    serde::Serialize,
    serde::Deserialize,
    schemars::JsonSchema,
)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum PiiKind {
    Email,
    Phone,
    CreditCard,
    UsSsn,
    Iban,
    Secret,
}
impl PiiKind {
    pub const ALL: [PiiKind; 6] =
        [PiiKind::Email, PiiKind::Phone, PiiKind::CreditCard, PiiKind::UsSsn, PiiKind::Iban, PiiKind::Secret];
    pub fn as_str(self) -> &'static str {
        match self {
            PiiKind::Email => "EMAIL",
            PiiKind::Phone => "PHONE",
            PiiKind::CreditCard => "CREDIT_CARD",
            PiiKind::UsSsn => "US_SSN",
            PiiKind::Iban => "IBAN",
            PiiKind::Secret => "SECRET",
        }
    }
    fn bit(self) -> u8 {
        1 << (self as u8)
    }
}
impl std::fmt::Display for PiiKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct PiiKinds(u8);
impl PiiKinds {
    pub const EMPTY: PiiKinds = PiiKinds(0);
    pub fn contains(self, k: PiiKind) -> bool {
        self.0 & k.bit() != 0
    }
    pub fn insert(&mut self, k: PiiKind) {
        self.0 |= k.bit()
    }
    pub fn is_empty(self) -> bool {
        self.0 == 0
    }
    pub fn intersects(self, o: PiiKinds) -> bool {
        self.0 & o.0 != 0
    }
    pub fn iter(self) -> impl Iterator<Item = PiiKind> {
        PiiKind::ALL.into_iter().filter(move |k| self.contains(*k))
    }
}
impl FromIterator<PiiKind> for PiiKinds {
    fn from_iter<I: IntoIterator<Item = PiiKind>>(i: I) -> Self {
        let mut s = PiiKinds::EMPTY;
        for k in i {
            s.insert(k)
        }
        s
    }
}

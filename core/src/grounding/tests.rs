use super::*;

fn passages() -> Corpus {
    [
        ("doc-refunds", "Refunds are issued within 14 days of a return request. Refunds go back to the original payment method."),
        ("doc-shipping", "Standard shipping takes 3 to 5 business days. Express shipping costs 12.50 USD and arrives the next business day."),
        ("doc-warranty", "Every laptop carries a 2 year limited warranty covering manufacturing defects. Accidental damage is not covered."),
        ("doc-support", "Support is available by email at any time and by phone on weekdays from 9 to 17 CET."),
        ("doc-plans", "The Team plan costs 49 USD per month and includes 10 seats. The Enterprise plan adds single sign-on and audit logs."),
    ]
    .into_iter()
    .map(|(id, text)| Passage { doc_id: id.into(), text: text.into() })
    .collect()
}

#[test]
fn stop_words_are_sorted_for_binary_search() {
    assert!(STOP_WORDS.windows(2).all(|w| w[0] < w[1]));
}

#[test]
fn tokens_keep_numbers_and_ids_whole() {
    assert_eq!(tokens("costs 1,250.50 USD (pol-1), fast."), ["costs", "1,250.50", "USD", "pol-1", "fast"]);
    assert_eq!(sentences("It costs 12.50 USD. Really? Yes!"), ["It costs 12.50 USD.", "Really?", "Yes!"]);
    let (ids, prose) = citations("see [doc:a] and [doc: b.txt ] but not [doc:] or [doc:x");
    assert_eq!(ids, ["a", "b.txt"]);
    assert_eq!(prose, "see  and  but not  or [doc:x");
}

/// A small labelled set: (response, cited ids, hallucinated?). Written for
/// this detector's documented method; the last rows are its known blind
/// spots, labelled truthfully, so the measured accuracy is honest.
const LABELLED: &[(&str, &[&str], bool)] = &[
    // Grounded: restating the passages.
    ("Refunds are issued within 14 days of the return request.", &[], false),
    ("Standard shipping takes 3 to 5 business days.", &[], false),
    ("Express shipping costs 12.50 USD and arrives the next business day.", &[], false),
    ("Every laptop has a 2 year limited warranty for manufacturing defects.", &[], false),
    ("Phone support runs on weekdays from 9 to 17 CET.", &[], false),
    ("The Team plan costs 49 USD per month with 10 seats.", &[], false),
    ("The Enterprise plan adds single sign-on and audit logs [doc:doc-plans].", &[], false),
    ("Refunds go back to the original payment method.", &["doc-refunds"], false),
    (
        "Accidental damage is not covered by the warranty. Support is available by email at any time.",
        &[],
        false,
    ),
    ("Can I get a refund? Refunds are issued within 14 days of a return request.", &[], false),
    // Hallucinated: wrong numbers, invented facts, unknown citations.
    ("Refunds are issued within 30 days of the return request.", &[], true),
    ("Express shipping costs 25 USD and arrives the next business day.", &[], true),
    ("Every laptop carries a 5 year limited warranty.", &[], true),
    ("The Team plan costs 99 USD per month and includes 50 seats.", &[], true),
    ("Our headquarters relocated to Lisbon in 2021 after the merger.", &[], true),
    ("Customers receive a free tablet with every enterprise subscription renewal.", &[], true),
    ("Support is available by phone around the clock on weekends.", &[], true),
    ("Refunds go back to the original payment method [doc:doc-returns-2019].", &[], true),
    ("The Enterprise plan includes single sign-on.", &["doc-secret-roadmap"], true),
    (
        "Standard shipping is free worldwide. Drones deliver parcels within one hour in major cities.",
        &[],
        true,
    ),
    // Known blind spots (see the module docs): a negation built from the
    // passage's own words reads as grounded; a faithful paraphrase in other
    // words reads as unsupported.
    ("Accidental damage is covered by the laptop warranty.", &[], true),
    ("Money comes back to whatever card you paid with.", &[], false),
];

#[test]
fn the_labelled_set_is_classified_with_the_documented_accuracy() {
    let passages = passages();
    let (mut right, mut confusion) = (0, [[0u32; 2]; 2]);
    let mut misses = Vec::new();
    for (response, cited, hallucinated) in LABELLED {
        let cited: Vec<String> = cited.iter().map(|c| (*c).to_owned()).collect();
        let report = check(response, &cited, &passages);
        let flagged = report.score >= 0.5;
        confusion[usize::from(*hallucinated)][usize::from(flagged)] += 1;
        if flagged == *hallucinated {
            right += 1;
        } else {
            misses.push(format!("{response} -> {report:?}"));
        }
    }
    let accuracy = f64::from(right) / f64::from(u32::try_from(LABELLED.len()).unwrap());
    // Exactly the two documented blind spots (the last two rows) are missed.
    let blind_spots: Vec<&str> = LABELLED[LABELLED.len() - 2..].iter().map(|(r, _, _)| *r).collect();
    let missed: Vec<&str> = misses.iter().map(|m| m.split(" -> ").next().unwrap_or("")).collect();
    assert_eq!(missed, blind_spots, "misses: {misses:#?}\nconfusion (label x flagged): {confusion:?}");
    assert!(accuracy >= 0.9, "accuracy {accuracy}");
}

#[test]
fn the_report_explains_itself() {
    let report = check(
        "Express shipping costs 40 USD. Refunds are issued within 14 days of a return request. See [doc:nope].",
        &[],
        &passages(),
    );
    assert_eq!(report.method, METHOD);
    assert_eq!((report.claims, report.unsupported), (2, 1));
    assert_eq!(report.unsupported_claims, ["Express shipping costs 40 USD."]);
    assert_eq!(report.unknown_citations, ["nope"]);
    assert!((report.score - 2.0 / 3.0).abs() < 1e-9, "{report:?}");
    // Nothing to check: 0, never NaN.
    assert_eq!(check("Ok.", &[], &passages()).score, 0.0);
    assert_eq!(check("", &[], &Corpus::default()).score, 0.0);
}

#[test]
fn work_is_bounded_however_large_the_input() {
    // Far more passages than kept: the oldest go.
    let corpus: Corpus = (0..MAX_PASSAGES + 10)
        .map(|i| Passage { doc_id: format!("d{i}"), text: format!("fact number {i} here") })
        .collect();
    assert_eq!(corpus.len(), MAX_PASSAGES);
    // A huge response: only the first claims and bytes are checked.
    let response = "Refunds are issued within 14 days of a return request. ".repeat(10_000);
    let report = check(&response, &[], &passages());
    assert!(report.truncated);
    assert!(report.claims <= MAX_CLAIMS, "{}", report.claims);
    assert_eq!(report.score, 0.0);
    let many: Vec<String> = (0..1_000).map(|i| format!("x{i}")).collect();
    let report = check("Ok.", &many, &passages());
    assert_eq!(report.unknown_citations.len(), MAX_LISTED);
    assert_eq!(report.score, 1.0);
}

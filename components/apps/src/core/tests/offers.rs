use super::*;

#[test]
fn declined_offers_are_kept_for_a_bounded_number_of_agents_per_app() {
    let mut c = core();
    c.deploy(
        BTreeMap::from([(
            PathId::parse("/huge"),
            Some(app("/huge", 1, json!({"cpus": 64}))),
        )]),
        BTreeSet::new(),
        false,
        Timestamp(2_000),
    )
    .unwrap();
    for n in 0..(LAST_UNUSED_OFFERS as i64 + 10) {
        let mut o = offer_json(0);
        o["id"] = json!({"value": format!("O{n}")});
        o["agent_id"] = json!({"value": format!("A{n}")});
        c.offers(&[typed(o)], Timestamp(3_000 + n));
    }
    let launch = &c.app(&PathId::parse("/huge")).unwrap().launch;
    assert_eq!(launch.offers.len(), LAST_UNUSED_OFFERS);
    assert_eq!(launch.processed, LAST_UNUSED_OFFERS as u64 + 10);
    assert!(
        launch
            .offers
            .contains_key(format!("A{}", LAST_UNUSED_OFFERS + 9).as_str()),
        "the newest is kept"
    );
    assert!(!launch.offers.contains_key("A0"), "the oldest is gone");
    let q = c.queue_json(true, Timestamp(4_000));
    let last = &q["queue"][0]["lastUnusedOffers"];
    assert_eq!(last.as_array().unwrap().len(), LAST_UNUSED_OFFERS);
    assert_eq!(last[0]["reason"], json!(["InsufficientCpus"]));
    assert_eq!(last[0]["offer"]["resources"][0]["name"], "cpus");
}

use super::*;

fn lab() -> ClusterSpec {
    ClusterSpec::lab("lab", 54320).unwrap()
}

fn err(spec: &ClusterSpec) -> String {
    spec.validate().unwrap_err().to_string()
}

#[test]
fn lab_default_matches_the_course() {
    let s = lab();
    assert_eq!(s.root().name, "pg0");
    let pg2 = s.node("pg2").unwrap();
    assert_eq!(pg2.upstream.as_deref(), Some("pg0"));
    assert_eq!(pg2.slot.as_deref(), Some("pg2_slot"));
    assert_eq!(pg2.application_name(), "sync2");
    assert_eq!(s.node("pg1").unwrap().application_name(), "pg1");
    assert_eq!(s.node("pg3").unwrap().port, 54323);
    assert_eq!(s.cluster.replication_user, "repluser");
}

#[test]
fn round_trips_through_toml() {
    let s = lab();
    let back = ClusterSpec::parse(&s.to_toml(), Path::new("x.toml")).unwrap();
    assert_eq!(s, back);
}

#[test]
fn unknown_upstream_is_named() {
    let mut s = lab();
    s.nodes[1].upstream = Some("pg9".into());
    assert!(err(&s).contains("unknown upstream 'pg9'"), "{}", err(&s));
}

#[test]
fn cycles_are_refused() {
    let mut s = lab();
    s.nodes[1].upstream = Some("pg2".into());
    s.nodes[2].upstream = Some("pg1".into());
    assert!(err(&s).contains("cycle"), "{}", err(&s));
}

#[test]
fn duplicates_are_refused() {
    let mut s = lab();
    s.nodes[2].name = "pg1".into();
    assert!(err(&s).contains("duplicate node name 'pg1'"));

    let mut s = lab();
    s.nodes[2].port = s.nodes[1].port;
    assert!(err(&s).contains("duplicate port"), "{}", err(&s));

    // Docker publishes every node's port on the host: they clash there too.
    s.cluster.runtime = RuntimeKind::Docker;
    assert!(err(&s).contains("duplicate port"), "{}", err(&s));

    let mut s = lab();
    s.nodes[2].slot = Some("pg1_slot".into());
    assert!(err(&s).contains("duplicate slot 'pg1_slot'"), "{}", err(&s));
}

#[test]
fn slot_names_follow_postgres_rules() {
    assert!(validate_slot_name("pg1_slot").is_ok());
    assert!(validate_slot_name(&"a".repeat(63)).is_ok());
    for bad in ["", "Pg1", "pg-1", "pg 1", &"a".repeat(64)] {
        let e = validate_slot_name(bad).unwrap_err().to_string();
        assert!(e.contains("invalid replication slot name"), "{e}");
    }
    assert!(validate_slot_name("Pg-1")
        .unwrap_err()
        .to_string()
        .contains("'pg_1'"));
}

#[test]
fn two_primaries_are_refused() {
    let mut s = lab();
    s.nodes[1].upstream = None;
    s.nodes[1].slot = None;
    assert!(err(&s).contains("exactly one node"), "{}", err(&s));
}

#[test]
fn unknown_fields_are_errors() {
    let text = lab()
        .to_toml()
        .replace("port = 54321", "port = 54321\nprot = 1");
    let e = ClusterSpec::parse(&text, Path::new("p.toml"))
        .unwrap_err()
        .to_string();
    assert!(e.contains("unknown field `prot`"), "{e}");
    assert!(e.contains("p.toml"), "{e}");
}

#[test]
fn clone_waves_respect_cascades() {
    let mut s = lab();
    s.nodes[3].upstream = Some("pg2".into());
    let waves: Vec<Vec<&str>> = s
        .clone_waves()
        .iter()
        .map(|w| w.iter().map(|n| n.name.as_str()).collect())
        .collect();
    assert_eq!(waves, vec![vec!["pg1", "pg2"], vec!["pg3"]]);
}

#[test]
fn sync_names_setting_and_validation() {
    let s = lab();
    let sync = SyncSpec {
        standbys: vec!["sync2".into(), "sync3".into()],
        method: SyncMethod::First,
        num: 1,
        commit: None,
        allow_unknown: false,
    };
    assert_eq!(
        sync.standby_names_setting(),
        r#"FIRST 1 ("sync2", "sync3")"#
    );
    assert!(validate_sync_names(&s, &sync, false).is_ok());

    let bad_num = SyncSpec {
        num: 3,
        ..sync.clone()
    };
    assert!(validate_sync_names(&s, &bad_num, false)
        .unwrap_err()
        .to_string()
        .contains("between 1 and"));
    let zero = SyncSpec {
        num: 0,
        ..sync.clone()
    };
    assert!(validate_sync_names(&s, &zero, false).is_err());

    let unknown = SyncSpec {
        standbys: vec!["nope".into()],
        ..sync.clone()
    };
    assert!(validate_sync_names(&s, &unknown, false)
        .unwrap_err()
        .to_string()
        .contains("not the application name"));
    assert!(validate_sync_names(&s, &unknown, true).is_ok());

    let star = SyncSpec {
        standbys: vec!["*".into()],
        method: SyncMethod::Any,
        num: 2,
        commit: Some("remote_apply".into()),
        allow_unknown: false,
    };
    assert_eq!(star.standby_names_setting(), "ANY 2 (*)");
    assert!(validate_sync_names(&s, &star, false).is_ok());

    let bad_commit = SyncSpec {
        commit: Some("sometimes".into()),
        ..sync
    };
    assert!(validate_sync_names(&s, &bad_commit, false)
        .unwrap_err()
        .to_string()
        .contains("invalid commit level"));
}

#[test]
fn parses_synchronous_standby_names_like_postgres() {
    assert_eq!(
        parse_standby_names(r#"FIRST 1 ("sync2", "sync3")"#),
        Some((SyncMethod::First, 1, vec!["sync2".into(), "sync3".into()]))
    );
    assert_eq!(
        parse_standby_names("any 2 (a,b,c)"),
        Some((SyncMethod::Any, 2, vec!["a".into(), "b".into(), "c".into()]))
    );
    assert_eq!(
        parse_standby_names("2 (sync2, sync3)"),
        Some((SyncMethod::First, 2, vec!["sync2".into(), "sync3".into()]))
    );
    assert_eq!(
        parse_standby_names("sync2, sync3"),
        Some((SyncMethod::First, 1, vec!["sync2".into(), "sync3".into()]))
    );
    assert_eq!(
        parse_standby_names("*"),
        Some((SyncMethod::First, 1, vec!["*".into()]))
    );
    assert_eq!(parse_standby_names(""), None);
}

#[test]
fn runtime_is_written_only_when_not_local() {
    let s = lab();
    assert!(!s.to_toml().contains("runtime"), "{}", s.to_toml());
    let mut d = lab();
    d.cluster.runtime = RuntimeKind::Docker;
    assert!(d.to_toml().contains("runtime = \"docker\""));
    let back = ClusterSpec::parse(&d.to_toml(), Path::new("x.toml")).unwrap();
    assert_eq!(back.cluster.runtime, RuntimeKind::Docker);
    assert_eq!("netns".parse::<RuntimeKind>().unwrap(), RuntimeKind::Netns);
    let e = "vm".parse::<RuntimeKind>().unwrap_err().to_string();
    assert!(e.contains("local, netns, docker"), "{e}");
}

#[test]
fn names_that_reach_configuration_files_cannot_carry_quotes_or_lines() {
    let injection = "a'\nwork_mem=77MB\n#";
    let mut s = lab();
    s.nodes[1].application_name = Some(injection.into());
    let e = err(&s);
    assert!(
        e.contains("application_name") && e.lines().count() == 1,
        "{e}"
    );

    let mut s = lab();
    s.nodes[1].application_name = Some("sync\"1".into());
    assert!(err(&s).contains("application_name"), "{}", err(&s));

    let mut s = lab();
    s.cluster.replication_user = "repl\"user".into();
    assert!(err(&s).contains("unquoted identifiers"), "{}", err(&s));

    let mut s = lab();
    s.sync = Some(SyncSpec {
        standbys: vec![injection.into()],
        method: SyncMethod::First,
        num: 1,
        commit: None,
        allow_unknown: true,
    });
    assert!(err(&s).contains("synchronous standby name"), "{}", err(&s));

    for bad in ["/srv/a\"b", "/srv/$HOME", "/srv/a\nb", "/srv/a`b`"] {
        let mut s = lab();
        s.cluster.data_dir = Some(bad.into());
        assert!(err(&s).contains("data directory"), "{}", err(&s));
        assert_eq!(err(&s).lines().count(), 1);
    }
    let mut s = lab();
    s.cluster.data_dir = Some("/srv/it's here".into());
    s.validate().unwrap();
}

#[test]
fn a_node_on_every_interface_is_accepted_with_a_warning() {
    let mut s = lab();
    assert!(s.warnings().is_empty());
    s.nodes[0].host = "0.0.0.0".parse().unwrap();
    s.validate().unwrap();
    let w = s.warnings();
    assert!(w.len() == 1 && w[0].contains("every interface"), "{w:?}");
}

#[test]
fn max_slot_wal_keep_size_defaults_to_1gb_and_is_checked() {
    let s = lab();
    assert_eq!(s.cluster.max_slot_wal_keep_size, "1GB");
    // A file written before the setting existed gets the default.
    let old = "[cluster]\nname = \"lab\"\n\n[[node]]\nname = \"pg0\"\nport = 5432\n";
    let parsed = ClusterSpec::parse(old, Path::new("x.toml")).unwrap();
    assert_eq!(parsed.cluster.max_slot_wal_keep_size, "1GB");
    for ok in ["-1", "512MB", "2GB", "64", "100 MB", "1TB", "8192kB"] {
        let mut s = lab();
        s.cluster.max_slot_wal_keep_size = ok.into();
        s.validate().unwrap_or_else(|e| panic!("{ok}: {e}"));
    }
    for bad in ["", "1gb", "-2", "1.5GB", "10 apples", "1GB'\nfsync = off"] {
        let mut s = lab();
        s.cluster.max_slot_wal_keep_size = bad.into();
        let e = err(&s);
        assert!(
            e.starts_with("invalid max_slot_wal_keep_size"),
            "{bad}: {e}"
        );
        assert!(!e.contains('\n'), "{e}");
    }
}

#[test]
fn netns_needs_no_distinct_ports_and_only_it_takes_a_subnet() {
    let mut s = lab();
    s.nodes[1].port = s.nodes[0].port;
    assert!(err(&s).contains("duplicate port"), "{}", err(&s));
    s.cluster.runtime = RuntimeKind::Netns;
    s.validate().unwrap();
    s.cluster.subnet = Some("10.42.7.0/24".into());
    s.validate().unwrap();
    let back = ClusterSpec::parse(&s.to_toml(), Path::new("x.toml")).unwrap();
    assert_eq!(back.cluster.subnet.as_deref(), Some("10.42.7.0/24"));
    s.cluster.subnet = Some("8.8.8.0/24".into());
    assert!(err(&s).contains("private /24"), "{}", err(&s));
    s.cluster.subnet = Some("10.42.7.0/24".into());
    s.cluster.runtime = RuntimeKind::Local;
    s.nodes[1].port += 1;
    assert!(
        err(&s).contains("netns and docker runtimes only"),
        "{}",
        err(&s)
    );
}

#[test]
fn privileged_ports_are_refused_with_the_fix() {
    let mut s = lab();
    s.nodes[1].port = 80;
    let e = err(&s);
    assert!(
        e.contains("node 'pg1' has port 80") && e.contains("1024"),
        "{e}"
    );
    for base in [0, 80, 1023] {
        let e = ClusterSpec::lab("lab", base).unwrap_err().to_string();
        assert!(
            e.contains("privileged") && e.contains("e.g. 25432"),
            "{base}: {e}"
        );
    }
    let e = ClusterSpec::lab("lab", 65533).unwrap_err().to_string();
    assert!(e.contains("no room for 4 nodes"), "{e}");
    ClusterSpec::lab("lab", 1024).unwrap().validate().unwrap();
}

#[test]
fn monitor_section_reads_and_refuses_bad_durations() {
    let base = "[cluster]\nname = \"lab\"\n\n[[node]]\nname = \"pg0\"\nhost = \"127.0.0.1\"\nport = 5432\n";
    let path = std::path::Path::new("pgrepl.toml");
    let ok = ClusterSpec::parse(
        &format!("{base}\n[monitor]\non_sync_loss = \"degrade\"\ninterval = \"250ms\"\n"),
        path,
    )
    .unwrap();
    let m = ok.monitor.unwrap();
    assert_eq!(m.on_sync_loss, crate::monitor::OnSyncLoss::Degrade);
    assert!(!m.allow_data_loss);
    assert_eq!(
        m.interval().unwrap(),
        Some(std::time::Duration::from_millis(250))
    );
    let bad = ClusterSpec::parse(
        &format!("{base}\n[monitor]\nfailover_timeout = \"soon\"\n"),
        path,
    )
    .unwrap_err()
    .to_string();
    assert!(
        bad.contains("failover_timeout") && bad.contains("2s"),
        "{bad}"
    );
    let bad = ClusterSpec::parse(
        &format!("{base}\n[monitor]\non_sync_loss = \"panic\"\n"),
        path,
    )
    .unwrap_err()
    .to_string();
    assert!(bad.contains("block") && bad.contains("degrade"), "{bad}");
}

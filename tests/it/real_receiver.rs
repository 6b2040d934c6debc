//! Shipping to a real OTLP receiver that nobody here wrote: rotel's collector with its debug
//! exporter (`util::rotel`). What the scripted receiver in `shipping` cannot tell us, this
//! does: that a real implementation decodes our protobuf and our OTLP/JSON.

use crate::util::rotel::{assert_received_exactly_once, names_in, Rotel};
use crate::util::{code, set_destination, text, Charm};

fn assert_all_shipped(charm: &Charm) {
    let traces = charm.traces();
    assert!(!traces.is_empty());
    for trace in &traces {
        assert_eq!(
            trace["state"], "shipped",
            "dispatch {} ({}) not shipped",
            trace["id"], trace["event"]
        );
    }
}

/// Two dispatches sent as they happen: one calling hook tools, one failing. Both reach rotel
/// whole, and the hooks end as they would without us.
fn two_dispatches_arrive(charm: &Charm) {
    let rotel = Rotel::start(&charm.scratch.path("rotel"));
    set_destination(charm, &[&rotel.url()]);

    let out = charm.dispatch(
        "hooks/install",
        &[("CHARM_RUN", "status-set active ready; is-leader >/dev/null")],
    );
    assert_eq!(code(&out), 0, "{}", text(&out.stderr));
    assert!(out.stderr.is_empty(), "{}", text(&out.stderr));
    let out = charm.dispatch("hooks/config-changed", &[("CHARM_EXIT", "1")]);
    assert_eq!(code(&out), 1, "the charm's exit code is mirrored");
    assert!(out.stderr.is_empty(), "{}", text(&out.stderr));

    let traces = charm.traces();
    assert_eq!(traces.len(), 2);
    let seen = rotel.spans_once_all_of(&traces);
    let output = rotel.output();
    assert_received_exactly_once(&seen, &traces, &output);

    let install = names_in(&seen, traces[0]["trace_id"].as_str().unwrap());
    for name in ["install", "charm", "status-set", "is-leader"] {
        assert!(
            install.iter().any(|n| n == name),
            "no {name:?} span in rotel's install trace {install:?}:\n{output}"
        );
    }
    let failed = names_in(&seen, traces[1]["trace_id"].as_str().unwrap());
    for name in ["config-changed", "charm"] {
        assert!(
            failed.iter().any(|n| n == name),
            "no {name:?} span in rotel's config-changed trace {failed:?}:\n{output}"
        );
    }
    assert_all_shipped(charm);
}

#[test]
fn a_real_otlp_receiver_accepts_our_protobuf_traces() {
    let charm = Charm::new("shell");
    two_dispatches_arrive(&charm);
}

#[test]
fn a_real_otlp_receiver_accepts_our_otlp_json_traces() {
    let charm = Charm::new("shell");
    charm.write("dispatch-trace.yaml", "protocol: http/json\n");
    two_dispatches_arrive(&charm);
}

#[test]
fn a_backlog_buffered_without_a_destination_is_flushed_to_a_real_receiver_once() {
    let charm = Charm::new("shell");
    let rotel = Rotel::start(&charm.scratch.path("rotel"));
    for event in ["install", "start"] {
        let out = charm.dispatch(
            &format!("hooks/{event}"),
            &[("CHARM_RUN", "status-set active")],
        );
        assert_eq!(code(&out), 0, "{}", text(&out.stderr));
        assert!(out.stderr.is_empty(), "{}", text(&out.stderr));
    }
    let traces = charm.traces();
    assert_eq!(traces.len(), 2);
    assert!(
        traces.iter().all(|t| t["state"] != "shipped"),
        "nothing can be shipped without a destination: {traces:#?}"
    );

    set_destination(&charm, &[&rotel.url()]);
    let flush = charm.tool(&["flush"]);
    assert_eq!(code(&flush), 0, "{}", text(&flush.stderr));
    assert!(
        text(&flush.stdout).contains("sent 2 dispatch(es)"),
        "{}",
        text(&flush.stdout)
    );

    let seen = rotel.spans_once_all_of(&traces);
    assert_received_exactly_once(&seen, &traces, &rotel.output());
    assert_all_shipped(&charm);
}

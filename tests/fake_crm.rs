//! The fake CRM of `common/fake_crm.rs` answers the four sample adapters' polling requests as
//! the adapters expect. The adapters build for wasm in their own workspace, so these tests make
//! the requests their `poll_request` names (the "Polling" sections of their READMEs, their
//! `src/api.rs`) with reqwest, encoded as the host encodes them (`url::Url::query_pairs_mut`),
//! and follow the paging links the way the adapters' `handle_page` does. Every loop is bounded.

#[path = "common/fake_crm.rs"]
mod fake_crm;

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use fake_crm::{FakeCrm, iso_seconds, parse_time_ms};
use serde_json::{Value, json};

/// Most pages any walk here follows.
const MAX_PAGES: usize = 20;

#[derive(Debug)]
struct Reply {
    status: u16,
    headers: reqwest::header::HeaderMap,
    body: Vec<u8>,
}

impl Reply {
    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!(
                "not JSON ({e}): {:?} (status {})",
                String::from_utf8_lossy(&self.body),
                self.status
            )
        })
    }

    fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

/// Sends requests to the fake as the host does: the adapter's path under the base URL, its
/// query appended pair by pair, its headers, and the credential.
#[derive(Debug)]
struct Host {
    client: reqwest::Client,
    base: String,
    authorization: Option<String>,
}

impl Host {
    fn new(crm: &FakeCrm, authorization: Option<&str>) -> Self {
        Self {
            client: reqwest::Client::new(),
            base: crm.base_url(),
            authorization: authorization.map(str::to_owned),
        }
    }

    fn url(&self, path: &str, query: &[(&str, &str)]) -> reqwest::Url {
        let mut url = reqwest::Url::parse(&format!("{}{path}", self.base)).unwrap();
        if !query.is_empty() {
            let mut pairs = url.query_pairs_mut();
            for (name, value) in query {
                pairs.append_pair(name, value);
            }
        }
        url
    }

    async fn send(
        &self,
        method: reqwest::Method,
        url: reqwest::Url,
        headers: &[(&str, &str)],
        body: Option<Vec<u8>>,
    ) -> Reply {
        let mut request = self.client.request(method, url);
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        if let Some(authorization) = &self.authorization {
            request = request.header("authorization", authorization);
        }
        if let Some(body) = body {
            request = request.body(body);
        }
        let response = request.send().await.expect("the fake CRM answers");
        Reply {
            status: response.status().as_u16(),
            headers: response.headers().clone(),
            body: response.bytes().await.unwrap().to_vec(),
        }
    }

    async fn get(&self, path: &str, query: &[(&str, &str)], headers: &[(&str, &str)]) -> Reply {
        self.send(reqwest::Method::GET, self.url(path, query), headers, None)
            .await
    }

    async fn post_json(&self, path: &str, body: &Value) -> Reply {
        self.send(
            reqwest::Method::POST,
            self.url(path, &[]),
            &[("content-type", "application/json")],
            Some(serde_json::to_vec(body).unwrap()),
        )
        .await
    }
}

fn ids_of(records: &[Value], key: &str) -> Vec<String> {
    records
        .iter()
        .map(|r| r[key].as_str().expect("an id").to_owned())
        .collect()
}

fn unique(ids: &[String]) -> BTreeSet<String> {
    let set: BTreeSet<String> = ids.iter().cloned().collect();
    assert_eq!(set.len(), ids.len(), "a record came back twice: {ids:?}");
    set
}

// ---------------------------------------------------------------------------------------------
// Salesforce

const SF_OPPORTUNITY_FIELDS: [&str; 17] = [
    "Id",
    "IsDeleted",
    "SystemModstamp",
    "LastModifiedDate",
    "Name",
    "AccountId",
    "StageName",
    "Amount",
    "ExpectedRevenue",
    "Probability",
    "CloseDate",
    "IsClosed",
    "IsWon",
    "Type",
    "LeadSource",
    "ForecastCategoryName",
    "OwnerId",
];

/// The salesforce adapter's query of Opportunity changes since `since` (its README, exactly).
fn sf_soql(since: Option<&str>) -> String {
    let filter = since
        .map(|s| format!(" WHERE SystemModstamp > {s}"))
        .unwrap_or_default();
    format!(
        "SELECT {} FROM Opportunity{filter} ORDER BY SystemModstamp ASC, Id ASC",
        SF_OPPORTUNITY_FIELDS.join(", ")
    )
}

/// The newest `SystemModstamp` of `records`, truncated to the second, as a SOQL literal.
fn sf_newest(records: &[Value], since: Option<String>) -> Option<String> {
    records
        .iter()
        .map(|r| parse_time_ms(r["SystemModstamp"].as_str().expect("SystemModstamp")).unwrap())
        .max()
        .map(|ms| format!("{}Z", iso_seconds(ms.div_euclid(1000))))
        .or(since)
}

/// One object's walk as the adapter makes it: `queryAll`, then every `nextRecordsUrl` until
/// `done`. The records, the number of pages, and the cursor's `since` after the walk.
async fn sf_walk(host: &Host, since: Option<&str>) -> (Vec<Value>, usize, Option<String>) {
    let soql = sf_soql(since);
    let mut reply = host
        .get("/services/data/v59.0/queryAll", &[("q", &soql)], &[])
        .await;
    let mut records = Vec::new();
    for page in 1..=MAX_PAGES {
        assert_eq!(
            reply.status,
            200,
            "{:?}",
            String::from_utf8_lossy(&reply.body)
        );
        assert!(reply.header("content-type").unwrap().contains("json"));
        let body = reply.json();
        let page_records = body["records"].as_array().expect("records").clone();
        for record in &page_records {
            assert_eq!(record["attributes"]["type"], "Opportunity");
            assert!(record["Id"].is_string());
            assert!(record["IsDeleted"].is_boolean());
        }
        records.extend(page_records);
        if body["done"] == json!(true) {
            assert!(body.get("nextRecordsUrl").is_none());
            let newest = sf_newest(&records, since.map(str::to_owned));
            return (records, page, newest);
        }
        let next = body["nextRecordsUrl"].as_str().expect("nextRecordsUrl");
        assert!(next.starts_with("/services/data/v59.0/query/"), "{next}");
        assert!(!next.contains('?'), "{next}");
        reply = host.get(next, &[], &[]).await;
    }
    panic!("the query did not end within {MAX_PAGES} pages");
}

#[tokio::test]
async fn salesforce_query_all_pages_once_in_order_and_filters_by_systemmodstamp() {
    let crm = FakeCrm::start().await;
    crm.accept_authorization(Some("Bearer tok-1"));
    crm.set_page_size("salesforce", 3);
    let seeded = crm.seed_opportunities(7);
    let host = Host::new(&crm, Some("Bearer tok-1"));

    // The first run: no `since`, so no WHERE; three pages of 3, 3 and 1.
    let (records, pages, since) = sf_walk(&host, None).await;
    assert_eq!(pages, 3);
    let ids = ids_of(&records, "Id");
    assert_eq!(ids, seeded, "oldest SystemModstamp first");
    unique(&ids);
    // Exactly the selected fields, in Salesforce's forms.
    let first = &records[0];
    let mut keys: Vec<&str> = first
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    keys.sort_unstable();
    let mut expected: Vec<&str> = SF_OPPORTUNITY_FIELDS.to_vec();
    expected.push("attributes");
    expected.sort_unstable();
    assert_eq!(keys, expected);
    assert_eq!(first["SystemModstamp"], "2025-12-01T00:00:00.000+0000");
    assert_eq!(first["IsDeleted"], false);
    assert!(first["Amount"].is_number());
    assert_eq!(first["StageName"], "Prospecting");
    assert_eq!(
        first["attributes"]["url"],
        format!("/services/data/v59.0/sobjects/Opportunity/{}", seeded[0])
    );
    assert!(first.get("CurrencyIsoCode").is_none());
    let since = since.unwrap();
    assert_eq!(since, "2025-12-01T00:00:06Z");

    // The query string is what the host sends: `q`, form-encoded.
    let logged = crm.requests();
    assert_eq!(logged.len(), 3);
    assert_eq!(logged[0].path, "/services/data/v59.0/queryAll");
    assert_eq!(logged[0].query_param("q").unwrap(), sf_soql(None));
    assert_eq!(logged[0].header("authorization"), Some("Bearer tok-1"));
    assert!(logged[1].path.starts_with("/services/data/v59.0/query/01g"));
    assert!(logged.iter().all(|l| l.status == 200 && l.method == "GET"));

    // Nothing since: one page, done, no records.
    let (records, pages, same) = sf_walk(&host, Some(&since)).await;
    assert_eq!((records.len(), pages), (0, 1));
    assert_eq!(same.as_deref(), Some(since.as_str()));

    // A change, a new record and a deletion: exactly those, oldest first, the deletion with
    // `IsDeleted: true`.
    crm.upsert(
        "salesforce",
        "Opportunity",
        &seeded[2],
        json!({"StageName": "Closed Won", "IsClosed": true, "IsWon": true, "Probability": 100.0}),
    );
    let new = crm.seed_opportunities(1);
    crm.delete("salesforce", "Opportunity", &seeded[4]);
    let (records, pages, next_since) = sf_walk(&host, Some(&since)).await;
    assert_eq!(pages, 1);
    assert_eq!(
        ids_of(&records, "Id"),
        [seeded[2].clone(), new[0].clone(), seeded[4].clone()]
    );
    assert_eq!(records[0]["StageName"], "Closed Won");
    assert_eq!(
        records[0]["Name"],
        format!("Fake Dental {} - Group Benefits", 3)
    );
    assert_eq!(records[2]["IsDeleted"], true);
    assert_eq!(next_since.as_deref(), Some("2025-12-01T00:00:09Z"));

    // `query` (not `queryAll`) leaves the deleted record out.
    let reply = host
        .get(
            "/services/data/v59.0/query",
            &[("q", &sf_soql(Some(&since)))],
            &[],
        )
        .await;
    assert_eq!(reply.json()["totalSize"], 2);
}

#[tokio::test]
async fn salesforce_sobjects_locators_and_malformed_queries() {
    let crm = FakeCrm::start().await;
    crm.set_page_size("salesforce", 2);
    let seeded = crm.seed_opportunities(3);
    crm.delete("salesforce", "Opportunity", &seeded[1]);
    let host = Host::new(&crm, None);

    let reply = host
        .get(
            &format!("/services/data/v59.0/sobjects/Opportunity/{}", seeded[0]),
            &[],
            &[],
        )
        .await;
    assert_eq!(reply.status, 200);
    let record = reply.json();
    assert_eq!(record["Id"], seeded[0].as_str());
    assert_eq!(record["attributes"]["type"], "Opportunity");
    assert_eq!(record["CloseDate"], "2026-01-30");

    // Gone: Salesforce's 404 array.
    for id in [&seeded[1], &"006FAKE99999999999".to_owned()] {
        let reply = host
            .get(
                &format!("/services/data/v59.0/sobjects/Opportunity/{id}"),
                &[],
                &[],
            )
            .await;
        assert_eq!(reply.status, 404);
        assert_eq!(reply.json()[0]["errorCode"], "NOT_FOUND");
    }

    // A query locator that expired: 400 INVALID_QUERY_LOCATOR, as the adapter expects.
    let reply = host
        .get(
            "/services/data/v59.0/queryAll",
            &[("q", &sf_soql(None))],
            &[],
        )
        .await;
    let body = reply.json();
    assert_eq!(
        (body["totalSize"].as_u64(), body["done"].as_bool()),
        (Some(3), Some(false))
    );
    let next = body["nextRecordsUrl"].as_str().unwrap().to_owned();
    assert!(next.ends_with("-2"), "{next}");
    crm.expire_query_locators();
    let reply = host.get(&next, &[], &[]).await;
    assert_eq!(reply.status, 400);
    assert_eq!(
        reply.json(),
        json!([{"message": "invalid query locator", "errorCode": "INVALID_QUERY_LOCATOR"}])
    );

    // What the adapter never writes is refused, as Salesforce would.
    let reply = host
        .get(
            "/services/data/v59.0/queryAll",
            &[("q", "SELECT Id FROM Opportunity WHERE Name = 'x'")],
            &[],
        )
        .await;
    assert_eq!(reply.status, 400);
    assert_eq!(reply.json()[0]["errorCode"], "MALFORMED_QUERY");
}

// ---------------------------------------------------------------------------------------------
// HubSpot

const HS_DEAL_PROPERTIES: [&str; 17] = [
    "hs_lastmodifieddate",
    "createdate",
    "dealname",
    "dealstage",
    "pipeline",
    "closedate",
    "hubspot_owner_id",
    "amount",
    "amount_in_home_currency",
    "hs_acv",
    "hs_arr",
    "hs_mrr",
    "hs_tcv",
    "hs_closed_amount",
    "hs_closed_amount_in_home_currency",
    "hs_projected_amount",
    "hs_projected_amount_in_home_currency",
];

/// A search of deals changed after `since`, paged by offset (`after`): HubSpot's paging, which
/// the fake serves (the adapter walks by keyset instead: [`hs_keyset_walk`]).
fn hs_deal_search(since: u64, after: Option<&str>) -> Value {
    let mut body = json!({
        "filterGroups": [{"filters": [{
            "propertyName": "hs_lastmodifieddate",
            "operator": "GT",
            "value": since.to_string(),
        }]}],
        "sorts": [{"propertyName": "hs_lastmodifieddate", "direction": "ASCENDING"}],
        "properties": HS_DEAL_PROPERTIES,
        "limit": 100,
    });
    if let Some(after) = after {
        body["after"] = json!(after);
    }
    body
}

/// A walk of the deals list by offset: the same search, `after` moving, until a page has no
/// `paging.next`. The records, the number of pages, and the newest modification time read.
async fn hs_walk(host: &Host, since: u64) -> (Vec<Value>, usize, u64) {
    let mut after: Option<String> = None;
    let mut records = Vec::new();
    let mut newest = since;
    for page in 1..=MAX_PAGES {
        let reply = host
            .post_json(
                "/crm/v3/objects/deals/search",
                &hs_deal_search(since, after.as_deref()),
            )
            .await;
        assert_eq!(
            reply.status,
            200,
            "{:?}",
            String::from_utf8_lossy(&reply.body)
        );
        let body = reply.json();
        for record in body["results"].as_array().expect("results") {
            assert!(record["id"].is_string());
            assert_eq!(record["archived"], false);
            let modified = record["properties"]["hs_lastmodifieddate"]
                .as_str()
                .unwrap();
            assert_eq!(record["updatedAt"].as_str(), Some(modified));
            newest = newest.max(parse_time_ms(modified).unwrap() as u64);
            records.push(record.clone());
        }
        match body["paging"]["next"]["after"].as_str() {
            Some(next) => after = Some(next.to_owned()),
            None => {
                assert!(body.get("paging").is_none());
                return (records, page, newest);
            }
        }
    }
    panic!("the search did not end within {MAX_PAGES} pages");
}

#[tokio::test]
async fn hubspot_search_pages_with_after_and_filters_on_the_modification_time() {
    let crm = FakeCrm::start().await;
    crm.accept_authorization(Some("Bearer hs-1"));
    crm.set_page_size("hubspot", 2);
    let seeded = crm.seed_hubspot_deals(5);
    let host = Host::new(&crm, Some("Bearer hs-1"));

    let (records, pages, since) = hs_walk(&host, 0).await;
    assert_eq!(pages, 3);
    let ids = ids_of(&records, "id");
    assert_eq!(ids, seeded, "oldest change first");
    unique(&ids);
    let first = &records[0];
    // Every property asked for (null when unset), plus hs_object_id; values are text.
    let properties = first["properties"].as_object().unwrap();
    for name in HS_DEAL_PROPERTIES {
        assert!(properties.contains_key(name), "{name}");
    }
    assert_eq!(properties["hs_object_id"], seeded[0].as_str());
    assert_eq!(properties["amount"], "1250.50");
    assert_eq!(properties["hs_acv"], Value::Null);
    assert_eq!(properties["dealstage"], "appointmentscheduled");
    assert_eq!(
        properties["hs_lastmodifieddate"],
        "2025-12-01T00:00:00.000Z"
    );
    assert_eq!(first["createdAt"], "2025-12-01T00:00:00.000Z");
    // 2025-12-01T00:00:04Z.
    assert_eq!(since, 1_764_547_204_000);

    let logged = crm.requests();
    assert_eq!(logged.len(), 3);
    let bodies: Vec<Value> = logged
        .iter()
        .map(|l| serde_json::from_slice(&l.body).unwrap())
        .collect();
    assert_eq!(bodies[0], hs_deal_search(0, None));
    assert_eq!(bodies[1], hs_deal_search(0, Some("2")));
    assert_eq!(bodies[2], hs_deal_search(0, Some("4")));
    assert_eq!(logged[0].header("content-type"), Some("application/json"));

    // GT the newest seen: nothing, and no paging.
    let (records, pages, same) = hs_walk(&host, since).await;
    assert_eq!((records.len(), pages, same), (0, 1, since));

    // A change: exactly that one.
    crm.upsert(
        "hubspot",
        "deals",
        &seeded[1],
        json!({"dealstage": "closedwon"}),
    );
    let (records, _, newer) = hs_walk(&host, since).await;
    assert_eq!(ids_of(&records, "id"), [seeded[1].clone()]);
    assert_eq!(records[0]["properties"]["dealstage"], "closedwon");
    assert_eq!(newer, since + 1000);

    // The 10,000-result window of HubSpot's search.
    let reply = host
        .post_json(
            "/crm/v3/objects/deals/search",
            &hs_deal_search(0, Some("10000")),
        )
        .await;
    assert_eq!(reply.status, 400);
    assert_eq!(reply.json()["status"], "error");
}

/// The hubspot adapter's search of deals from its boundary `since` (its README and
/// `src/api.rs`): `GTE` it, by modification time; or, walking the records of that one
/// millisecond by id, `GTE` and `LTE` it, `hs_object_id` `GT` the last id read.
fn hs_keyset_search(since: u64, ties: Option<Option<&str>>) -> Value {
    let time = |operator: &str| {
        json!({"propertyName": "hs_lastmodifieddate", "operator": operator,
               "value": since.to_string()})
    };
    let (filters, sort) = match ties {
        None => (vec![time("GTE")], "hs_lastmodifieddate"),
        Some(after) => {
            let mut filters = vec![time("GTE"), time("LTE")];
            if let Some(after) = after {
                filters.push(
                    json!({"propertyName": "hs_object_id", "operator": "GT", "value": after}),
                );
            }
            (filters, "hs_object_id")
        }
    };
    json!({
        "filterGroups": [{"filters": filters}],
        "sorts": [{"propertyName": sort, "direction": "ASCENDING"}],
        "properties": HS_DEAL_PROPERTIES,
        "limit": 100,
    })
}

/// A walk of the deals as the adapter makes it (its `handle_page`): each search from the
/// newest modification time read, skipping the records read at it; a page of records all at
/// the boundary walks that millisecond by id, then goes on one millisecond later. `between`
/// runs after each page (from 1). The versions read (id, modification ms), the number of
/// searches, and the boundary after the walk.
async fn hs_keyset_walk(
    host: &Host,
    since: u64,
    mut between: impl FnMut(usize),
) -> (Vec<(String, u64)>, usize, u64) {
    let mut since = since;
    let mut seen: BTreeSet<String> = BTreeSet::new();
    let mut ties: Option<Option<String>> = None;
    let mut read = Vec::new();
    for page in 1..=MAX_PAGES {
        let body = hs_keyset_search(since, ties.as_ref().map(Option::as_deref));
        let reply = host.post_json("/crm/v3/objects/deals/search", &body).await;
        assert_eq!(
            reply.status,
            200,
            "{:?}",
            String::from_utf8_lossy(&reply.body)
        );
        let answer = reply.json();
        let versions: Vec<(String, u64)> = answer["results"]
            .as_array()
            .expect("results")
            .iter()
            .map(|r| {
                let at = r["properties"]["hs_lastmodifieddate"].as_str().unwrap();
                (
                    r["id"].as_str().unwrap().to_owned(),
                    parse_time_ms(at).unwrap() as u64,
                )
            })
            .collect();
        for (id, at) in &versions {
            if !(*at == since && seen.contains(id)) {
                read.push((id.clone(), *at));
            }
        }
        let more = answer["paging"]["next"]["after"].is_string();
        between(page);
        let newest = versions.iter().map(|(_, at)| *at).max();
        match (ties.take(), more) {
            (Some(_), false) => {
                since += 1;
                seen.clear();
            }
            (Some(_), true) => {
                let last = versions
                    .iter()
                    .map(|(id, _)| id.clone())
                    .max_by_key(|id| (id.len(), id.clone()));
                ties = Some(last);
            }
            (None, false) => return (read, page, newest.map_or(since, |n| n.max(since))),
            (None, true) => match newest {
                Some(newest) if newest > since => {
                    since = newest;
                    seen = versions
                        .iter()
                        .filter(|(_, at)| *at == newest)
                        .map(|(id, _)| id.clone())
                        .collect();
                }
                _ => {
                    seen.extend(
                        versions
                            .iter()
                            .filter(|(_, at)| *at == since)
                            .map(|(id, _)| id.clone()),
                    );
                    ties = Some(None);
                }
            },
        }
    }
    panic!("the walk did not end within {MAX_PAGES} pages");
}

#[tokio::test]
async fn hubspot_search_walked_by_keyset_reads_every_version_once() {
    let crm = FakeCrm::start().await;
    crm.set_page_size("hubspot", 2);
    let first = crm.seed_hubspot_deals(1);
    // A bulk update: four deals saved in the same millisecond (more than a page holds).
    crm.hold_clock(true);
    let bulk = crm.seed_hubspot_deals(4);
    crm.hold_clock(false);
    let last = crm.seed_hubspot_deals(2);
    let stamp = |id: &str| {
        let at = crm.modified_at("hubspot", "deals", id).unwrap();
        at.duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis() as u64
    };
    assert!(bulk.iter().all(|id| stamp(id) == stamp(&bulk[0])));
    assert_eq!(stamp(&bulk[0]), stamp(&first[0]) + 1000);
    assert_eq!(
        stamp(&last[0]),
        stamp(&bulk[0]) + 1000,
        "the clock goes on after the held second"
    );
    let host = Host::new(&crm, None);

    let mut saved = None;
    let (read, searches, since) = hs_keyset_walk(&host, 0, |page| {
        if page == 4 {
            // Saved mid-walk, one of the bulk already read: read again at its new time.
            crm.upsert(
                "hubspot",
                "deals",
                &bulk[0],
                json!({"dealstage": "closedwon"}),
            );
            saved = Some(bulk[0].clone());
        }
    })
    .await;
    let saved = saved.unwrap();
    let mut versions: Vec<(String, u64)> = first
        .iter()
        .chain(&bulk)
        .chain(&last)
        .map(|id| {
            (
                id.clone(),
                if *id == saved {
                    stamp(&bulk[1])
                } else {
                    stamp(id)
                },
            )
        })
        .collect();
    versions.push((saved.clone(), stamp(&saved)));
    let mut got = read.clone();
    got.sort();
    versions.sort();
    assert_eq!(got, versions, "every version once, in order: {read:?}");
    assert_eq!(since, stamp(&saved));
    // The fake answered the walk by id: its filters on the modification time and the id, and
    // its sort by `hs_object_id`.
    let bodies: Vec<Value> = crm
        .requests_to("/crm/v3/objects/deals/search")
        .iter()
        .map(|l| serde_json::from_slice(&l.body).unwrap())
        .collect();
    assert_eq!(bodies.len(), searches);
    let by_id = bodies
        .iter()
        .filter(|b| b["sorts"][0]["propertyName"] == "hs_object_id")
        .count();
    assert!(by_id >= 2, "{bodies:?}");
    assert!(bodies.iter().all(|b| b.get("after").is_none()));

    // Nothing changed: the boundary's record read again, nothing else.
    let (read, _, same) = hs_keyset_walk(&host, since, |_| {}).await;
    assert_eq!((read, same), (vec![(saved, since)], since));
}

#[tokio::test]
async fn hubspot_archived_contacts_list_holds_the_deleted_ones() {
    let crm = FakeCrm::start().await;
    crm.set_page_size("hubspot", 2);
    let contacts = crm.seed_hubspot_contacts(4);
    crm.delete("hubspot", "contacts", &contacts[0]);
    crm.delete("hubspot", "contacts", &contacts[2]);
    crm.delete("hubspot", "contacts", &contacts[3]);
    let host = Host::new(&crm, None);

    // `GET /crm/v3/objects/contacts?archived=true&limit=100[&after=]`, walked whole.
    let mut archived = Vec::new();
    let mut after: Option<String> = None;
    let mut pages = 0;
    for _ in 0..MAX_PAGES {
        pages += 1;
        let mut query = vec![("archived", "true"), ("limit", "100")];
        if let Some(after) = &after {
            query.push(("after", after.as_str()));
        }
        let reply = host.get("/crm/v3/objects/contacts", &query, &[]).await;
        assert_eq!(reply.status, 200);
        let body = reply.json();
        archived.extend(body["results"].as_array().unwrap().iter().cloned());
        match body["paging"]["next"]["after"].as_str() {
            Some(next) => after = Some(next.to_owned()),
            None => break,
        }
    }
    assert_eq!(pages, 2);
    let ids = ids_of(&archived, "id");
    assert_eq!(
        unique(&ids),
        [&contacts[0], &contacts[2], &contacts[3]]
            .into_iter()
            .cloned()
            .collect::<BTreeSet<String>>()
    );
    for record in &archived {
        assert_eq!(record["archived"], true);
        assert!(record["archivedAt"].is_string());
        assert!(record["properties"]["lastmodifieddate"].is_string());
    }

    // The contacts search sees the live one only.
    let reply = host
        .post_json(
            "/crm/v3/objects/contacts/search",
            &json!({
                "filterGroups": [{"filters": [
                    {"propertyName": "lastmodifieddate", "operator": "GT", "value": "0"}
                ]}],
                "sorts": [{"propertyName": "lastmodifieddate", "direction": "ASCENDING"}],
                "properties": ["lastmodifieddate", "createdate", "email"],
                "limit": 100,
            }),
        )
        .await;
    let body = reply.json();
    assert_eq!(body["total"], 1);
    assert_eq!(body["results"][0]["id"], contacts[1].as_str());
    assert!(body["results"][0]["properties"]["email"].is_string());

    // Restored: live again.
    crm.upsert("hubspot", "contacts", &contacts[0], json!({}));
    let reply = host
        .get(
            "/crm/v3/objects/contacts",
            &[("archived", "true"), ("limit", "100")],
            &[],
        )
        .await;
    assert_eq!(reply.json()["results"].as_array().unwrap().len(), 2);
}

// ---------------------------------------------------------------------------------------------
// Zoho

const ZOHO_DEAL_FIELDS: &str = "Deal_Name,Stage,Amount,Expected_Revenue,Probability,\
                                Closing_Date,Type,Lead_Source,Currency,Exchange_Rate,\
                                Account_Name,Contact_Name,Owner,Modified_Time";

/// A walk of one Zoho listing through its pages (`GET /crm/v5/Deals?fields=&per_page=200`,
/// then `page_token`, else `page`; `If-Modified-Since` on every page when the list has a
/// `since`), as the zoho adapter walks the deleted list (records: [`zoho_keyset_walk`]). The
/// records, the statuses answered, and the newest time read (else `since`).
async fn zoho_walk(
    host: &Host,
    path: &str,
    base_query: &[(&str, &str)],
    since: Option<&str>,
) -> (Vec<Value>, Vec<u16>, Option<String>) {
    let mut records = Vec::new();
    let mut statuses = Vec::new();
    let mut token: Option<String> = None;
    let mut page: Option<String> = None;
    for _ in 0..MAX_PAGES {
        let mut query = base_query.to_vec();
        if let Some(token) = &token {
            query.push(("page_token", token.as_str()));
        } else if let Some(page) = &page {
            query.push(("page", page.as_str()));
        }
        let mut headers = Vec::new();
        if let Some(since) = since {
            headers.push(("if-modified-since", since));
        }
        let reply = host.get(path, &query, &headers).await;
        statuses.push(reply.status);
        if reply.status == 304 || (reply.status < 300 && reply.body.is_empty()) {
            assert!(reply.body.is_empty());
            break;
        }
        assert_eq!(
            reply.status,
            200,
            "{:?}",
            String::from_utf8_lossy(&reply.body)
        );
        let body = reply.json();
        records.extend(body["data"].as_array().expect("data").iter().cloned());
        let info = &body["info"];
        if info["more_records"] != json!(true) {
            break;
        }
        // `page_token` for records; the deleted list numbers its pages.
        match info["next_page_token"].as_str() {
            Some(next) if !path.ends_with("/deleted") => token = Some(next.to_owned()),
            _ => page = Some((info["page"].as_u64().unwrap() + 1).to_string()),
        }
    }
    let time_key = if path.ends_with("/deleted") {
        "deleted_time"
    } else {
        "Modified_Time"
    };
    let newest = records
        .iter()
        .map(|r| parse_time_ms(r[time_key].as_str().expect("a time")).unwrap())
        .max()
        .map(|ms| format!("{}+00:00", iso_seconds(ms.div_euclid(1000))))
        .or(since.map(str::to_owned));
    (records, statuses, newest)
}

const DEALS_QUERY: [(&str, &str); 2] = [("fields", ZOHO_DEAL_FIELDS), ("per_page", "200")];

#[tokio::test]
async fn zoho_listing_pages_with_tokens_and_answers_304_when_nothing_changed() {
    let crm = FakeCrm::start().await;
    crm.accept_authorization(Some("Zoho-oauthtoken z-1"));
    crm.set_page_size("zoho", 2);
    let seeded = crm.seed_zoho_deals(5);
    let host = Host::new(&crm, Some("Zoho-oauthtoken z-1"));

    let (records, statuses, since) = zoho_walk(&host, "/crm/v5/Deals", &DEALS_QUERY, None).await;
    assert_eq!(statuses, [200, 200, 200]);
    let ids = ids_of(&records, "id");
    assert_eq!(
        unique(&ids),
        seeded.iter().cloned().collect::<BTreeSet<_>>()
    );
    let first = &records[0];
    // `id` and the fields asked for, nothing else.
    let mut keys: Vec<&str> = first
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    keys.sort_unstable();
    let mut expected: Vec<&str> = ZOHO_DEAL_FIELDS.split(',').collect();
    expected.push("id");
    expected.sort_unstable();
    assert_eq!(keys, expected);
    assert!(first["Amount"].is_number());
    assert!(first["Owner"]["id"].is_string());
    assert_eq!(first["Contact_Name"], Value::Null);
    let since = since.unwrap();
    assert_eq!(since, "2025-12-01T00:00:04+00:00");
    let logged = crm.requests();
    assert!(logged[0].header("if-modified-since").is_none());
    assert!(logged[1].query_param("page_token").is_some());
    assert_eq!(logged[1].query_param("fields").unwrap(), ZOHO_DEAL_FIELDS);

    // Nothing modified since: 304, no body.
    let (records, statuses, same) =
        zoho_walk(&host, "/crm/v5/Deals", &DEALS_QUERY, Some(&since)).await;
    assert_eq!(
        (records.len(), statuses, same.as_deref()),
        (0, vec![304], Some(since.as_str()))
    );

    // One change: that record only.
    crm.upsert(
        "zoho",
        "Deals",
        &seeded[3],
        json!({"Stage": "Closed Won", "Amount": 99.5}),
    );
    let (records, statuses, newer) =
        zoho_walk(&host, "/crm/v5/Deals", &DEALS_QUERY, Some(&since)).await;
    assert_eq!(statuses, [200]);
    assert_eq!(ids_of(&records, "id"), [seeded[3].clone()]);
    assert_eq!(records[0]["Stage"], "Closed Won");
    assert_eq!(newer.as_deref(), Some("2025-12-01T00:00:05+00:00"));

    // A module with nothing at all, never walked: 204.
    let reply = host
        .get(
            "/crm/v5/Accounts",
            &[("fields", "Account_Name,Modified_Time")],
            &[],
        )
        .await;
    assert_eq!((reply.status, reply.body.len()), (204, 0));

    // An expired page token: Zoho's 400, which the adapter answers by listing again.
    let reply = host.get("/crm/v5/Deals", &DEALS_QUERY, &[]).await;
    let token = reply.json()["info"]["next_page_token"]
        .as_str()
        .unwrap()
        .to_owned();
    crm.expire_page_tokens();
    let mut query = DEALS_QUERY.to_vec();
    query.push(("page_token", token.as_str()));
    let reply = host.get("/crm/v5/Deals", &query, &[]).await;
    assert_eq!(reply.status, 400);
    assert_eq!(
        reply.json(),
        json!({"code": "INVALID_DATA", "details": {"param_name": "page_token"},
               "message": "the page token has expired", "status": "error"})
    );
}

const DEALS_SORTED: [(&str, &str); 4] = [
    ("fields", ZOHO_DEAL_FIELDS),
    ("per_page", "200"),
    ("sort_by", "Modified_Time"),
    ("sort_order", "asc"),
];

/// A walk of the deals' records as the zoho adapter makes it (its README and `src/api.rs`):
/// sorted by `Modified_Time` ascending, `If-Modified-Since` one second before the boundary,
/// each listing from the newest second read, but a page of records all at or before the
/// boundary goes on with that listing's `page_token`. `between` runs after each page (from 1).
/// The records read, the requests' headers and tokens, and the boundary after the walk.
async fn zoho_keyset_walk(
    host: &Host,
    since: Option<i64>,
    mut between: impl FnMut(usize),
) -> (
    Vec<Value>,
    Vec<(Option<String>, Option<String>)>,
    Option<i64>,
) {
    let mut since = since;
    let mut token: Option<String> = None;
    let mut records = Vec::new();
    let mut asked = Vec::new();
    for page in 1..=MAX_PAGES {
        let mut query = DEALS_SORTED.to_vec();
        if let Some(token) = &token {
            query.push(("page_token", token.as_str()));
        }
        let header = since.map(|s| format!("{}+00:00", iso_seconds(s - 1)));
        let headers: Vec<(&str, &str)> = header
            .iter()
            .map(|h| ("if-modified-since", h.as_str()))
            .collect();
        asked.push((header.clone(), token.clone()));
        let reply = host.get("/crm/v5/Deals", &query, &headers).await;
        between(page);
        if reply.status == 304 || reply.status == 204 {
            return (records, asked, since);
        }
        assert_eq!(
            reply.status,
            200,
            "{:?}",
            String::from_utf8_lossy(&reply.body)
        );
        let body = reply.json();
        let data = body["data"].as_array().expect("data").clone();
        let newest = data
            .iter()
            .map(|r| parse_time_ms(r["Modified_Time"].as_str().unwrap()).unwrap() / 1000)
            .max();
        records.extend(data);
        let more = body["info"]["more_records"] == json!(true);
        match newest {
            _ if !more => return (records, asked, newest.max(since)),
            Some(newest) if since.is_none_or(|s| newest > s) => {
                since = Some(newest);
                token = None;
            }
            _ => token = body["info"]["next_page_token"].as_str().map(str::to_owned),
        }
    }
    panic!("the walk did not end within {MAX_PAGES} pages");
}

/// The ids of the sorted deals listing with `If-Modified-Since: <header>` (none on a `304`).
async fn listed_after(host: &Host, header: &str) -> Vec<String> {
    let reply = host
        .get(
            "/crm/v5/Deals",
            &DEALS_SORTED,
            &[("if-modified-since", header)],
        )
        .await;
    if reply.status == 304 {
        return Vec::new();
    }
    ids_of(reply.json()["data"].as_array().unwrap(), "id")
}

#[tokio::test]
async fn zoho_listing_sorted_by_modification_time_walked_from_the_newest_second() {
    let crm = FakeCrm::start().await;
    crm.set_page_size("zoho", 2);
    let first = crm.seed_zoho_deals(1);
    // A mass update: three deals saved in one second (more than a page holds).
    crm.hold_clock(true);
    let bulk = crm.seed_zoho_deals(3);
    crm.hold_clock(false);
    let last = crm.seed_zoho_deals(2);
    let host = Host::new(&crm, None);

    // Sorted oldest change first (ties by id), whatever the default order.
    let reply = host.get("/crm/v5/Deals", &DEALS_SORTED, &[]).await;
    let body = reply.json();
    assert_eq!(
        ids_of(body["data"].as_array().unwrap(), "id"),
        [first[0].clone(), bulk[0].clone()]
    );
    assert_eq!(body["info"]["sort_by"], "Modified_Time");
    assert_eq!(body["info"]["sort_order"], "asc");
    // `If-Modified-Since` is "modified after": one second before a time lists that second.
    let second = |id: &str| {
        crm.modified_at("zoho", "Deals", id)
            .unwrap()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs() as i64
    };
    let at = |secs: i64| format!("{}+00:00", iso_seconds(secs));
    assert!(listed_after(&host, &at(second(&last[1]))).await.is_empty());
    assert_eq!(
        listed_after(&host, &at(second(&last[1]) - 1)).await,
        [last[1].clone()]
    );

    let mut saved = None;
    let (records, asked, since) = zoho_keyset_walk(&host, None, |page| {
        if page == 2 {
            // Saved mid-walk, after it was read: listed again at its new time.
            crm.upsert("zoho", "Deals", &first[0], json!({"Stage": "Closed Won"}));
            saved = Some(first[0].clone());
        }
    })
    .await;
    let saved = saved.unwrap();
    let ids = ids_of(&records, "id");
    let distinct: BTreeSet<String> = ids.iter().cloned().collect();
    let all: BTreeSet<String> = first.iter().chain(&bulk).chain(&last).cloned().collect();
    assert_eq!(distinct, all, "{ids:?}");
    assert!(
        records
            .iter()
            .any(|r| r["id"] == saved.as_str() && r["Stage"] == "Closed Won")
    );
    assert_eq!(since, Some(second(&saved)));
    // The walk went through the held second with the listing's page token.
    assert!(asked.iter().any(|(_, token)| token.is_some()), "{asked:?}");
    assert!(asked[1].0.is_some());

    // Nothing changed: the boundary's second listed again, nothing else.
    let (records, _, same) = zoho_keyset_walk(&host, since, |_| {}).await;
    assert_eq!((ids_of(&records, "id"), same), (vec![saved], since));
}

#[tokio::test]
async fn zoho_deleted_list_and_records_by_ids() {
    let crm = FakeCrm::start().await;
    crm.set_page_size("zoho", 2);
    let seeded = crm.seed_zoho_deals(4);
    crm.delete("zoho", "Deals", &seeded[0]);
    crm.delete("zoho", "Deals", &seeded[2]);
    crm.delete("zoho", "Deals", &seeded[3]);
    crm.delete("zoho", "Deals", "5725767000000990001"); // never upserted
    let host = Host::new(&crm, None);
    let deleted_query = [("type", "all"), ("per_page", "200")];

    // `GET /crm/v5/Deals/deleted?type=all&per_page=200`, paged by `page`.
    let (records, statuses, since) =
        zoho_walk(&host, "/crm/v5/Deals/deleted", &deleted_query, None).await;
    assert_eq!(statuses, [200, 200]);
    let ids = ids_of(&records, "id");
    assert_eq!(unique(&ids).len(), 4);
    assert_eq!(records[0]["id"], "5725767000000990001", "newest first");
    assert_eq!(records[0]["type"], "permanent");
    let known = records
        .iter()
        .find(|r| r["id"] == seeded[0].as_str())
        .unwrap();
    assert_eq!(known["type"], "recycle");
    assert_eq!(known["display_name"], "Fake Schools 1 - Dental");
    assert!(known["deleted_by"]["id"].is_string());
    assert_eq!(known["deleted_time"], "2025-12-01T00:00:04+00:00");
    let logged = crm.requests();
    assert_eq!(logged[1].query_param("page").as_deref(), Some("2"));

    // Since the newest deletion: 304.
    let (_, statuses, _) = zoho_walk(
        &host,
        "/crm/v5/Deals/deleted",
        &deleted_query,
        since.as_deref(),
    )
    .await;
    assert_eq!(statuses, [304]);

    // The listing no longer holds the deleted ones.
    let (records, _, _) = zoho_walk(&host, "/crm/v5/Deals", &DEALS_QUERY, None).await;
    assert_eq!(ids_of(&records, "id"), [seeded[1].clone()]);

    // Records behind a notification: the live ones among the ids, in their order.
    let ids = format!("{},{},{}", seeded[1], seeded[2], seeded[1]);
    let reply = host
        .get(
            "/crm/v5/Deals",
            &[("fields", ZOHO_DEAL_FIELDS), ("ids", &ids)],
            &[],
        )
        .await;
    assert_eq!(reply.status, 200);
    let body = reply.json();
    assert_eq!(
        ids_of(body["data"].as_array().unwrap(), "id"),
        [seeded[1].clone()]
    );
    assert_eq!(body["info"]["more_records"], false);
    let reply = host
        .get(
            "/crm/v5/Deals",
            &[("fields", ZOHO_DEAL_FIELDS), ("ids", &seeded[2])],
            &[],
        )
        .await;
    assert_eq!(reply.status, 204);
}

// ---------------------------------------------------------------------------------------------
// Zenoti

const CENTER: &str = "b2e9d7c4-1a6f-4c38-8b25-7e4f0d9a1c63";
const OTHER_CENTER: &str = "4f6c2a1e-8d3b-4a57-9e0c-2b7d51c3a9f4";

/// The zenoti adapter's request for a center's week (its README, parameters in this order).
async fn zenoti_week(host: &Host, center: &str, start: &str, end: &str) -> Reply {
    host.get(
        "/v1/appointments",
        &[
            ("center_id", center),
            ("start_date", start),
            ("end_date", end),
            ("include_no_show_cancel", "true"),
        ],
        &[],
    )
    .await
}

#[tokio::test]
async fn zenoti_appointments_by_center_and_week() {
    let crm = FakeCrm::start().await;
    crm.accept_authorization(Some("apikey zk-1"));
    let week_1 = crm.seed_zenoti_appointments(CENTER, "2025-12-03", 3);
    let week_2 = crm.seed_zenoti_appointments(CENTER, "2025-12-08", 1);
    let other = crm.seed_zenoti_appointments(OTHER_CENTER, "2025-12-03", 2);
    crm.upsert("zenoti", "appointments", &week_1[1], json!({"status": -1}));
    let host = Host::new(&crm, Some("apikey zk-1"));

    // poll_start_date 2025-12-01: the first window, then the next.
    let reply = zenoti_week(&host, CENTER, "2025-12-01", "2025-12-07").await;
    assert_eq!(reply.status, 200);
    let body = reply.json();
    let appointments = body["appointments"].as_array().unwrap();
    assert_eq!(ids_of(appointments, "appointment_id"), week_1);
    let first = &appointments[0];
    assert_eq!(first["start_time"], "2025-12-03T08:00:00");
    assert_eq!(first["status"], 0);
    assert!(first["price"].is_number());
    assert!(first["service"]["id"].is_string());
    assert!(first["therapist"]["first_name"].is_string());
    assert_eq!(appointments[1]["status"], -1, "cancelled, still listed");

    let reply = zenoti_week(&host, CENTER, "2025-12-08", "2025-12-14").await;
    let body = reply.json();
    assert_eq!(
        ids_of(body["appointments"].as_array().unwrap(), "appointment_id"),
        week_2
    );
    let reply = zenoti_week(&host, OTHER_CENTER, "2025-12-01", "2025-12-07").await;
    let body = reply.json();
    assert_eq!(
        ids_of(body["appointments"].as_array().unwrap(), "appointment_id"),
        other
    );
    let reply = zenoti_week(&host, CENTER, "2025-12-15", "2025-12-21").await;
    assert_eq!(reply.json(), json!({"appointments": []}));

    // Without include_no_show_cancel the cancelled one is left out, as Zenoti does.
    let reply = host
        .get(
            "/v1/appointments",
            &[
                ("center_id", CENTER),
                ("start_date", "2025-12-01"),
                ("end_date", "2025-12-07"),
            ],
            &[],
        )
        .await;
    assert_eq!(reply.json()["appointments"].as_array().unwrap().len(), 2);

    // More than seven days: refused.
    let reply = zenoti_week(&host, CENTER, "2025-12-01", "2025-12-08").await;
    assert_eq!(reply.status, 400);
    assert!(reply.json()["Message"].is_string());

    // Deleted: no longer listed.
    crm.delete("zenoti", "appointments", &week_1[0]);
    let reply = zenoti_week(&host, CENTER, "2025-12-01", "2025-12-07").await;
    assert_eq!(reply.json()["appointments"].as_array().unwrap().len(), 2);
}

// ---------------------------------------------------------------------------------------------
// Failures, credentials, pace and log

#[tokio::test]
async fn injected_429_with_retry_after_and_500_then_normal_answers() {
    let crm = FakeCrm::start().await;
    crm.seed_opportunities(1);
    crm.seed_hubspot_deals(1);
    let host = Host::new(&crm, None);
    let soql = sf_soql(None);

    crm.fail_next("/services/data/", 429, Some(3), 2);
    for _ in 0..2 {
        let reply = host
            .get("/services/data/v59.0/queryAll", &[("q", &soql)], &[])
            .await;
        assert_eq!(reply.status, 429);
        assert_eq!(reply.header("retry-after"), Some("3"));
        assert_eq!(reply.json()[0]["errorCode"], "REQUEST_LIMIT_EXCEEDED");
    }
    let reply = host
        .get("/services/data/v59.0/queryAll", &[("q", &soql)], &[])
        .await;
    assert_eq!(reply.status, 200);
    assert_eq!(reply.json()["totalSize"], 1);

    crm.fail_next("/crm/v3/objects/deals", 500, None, 1);
    // Another path is not affected, and does not use the failure up.
    let reply = host
        .get(
            "/crm/v3/objects/contacts",
            &[("archived", "true"), ("limit", "100")],
            &[],
        )
        .await;
    assert_eq!(reply.status, 200);
    let reply = host
        .post_json("/crm/v3/objects/deals/search", &hs_deal_search(0, None))
        .await;
    assert_eq!(reply.status, 500);
    assert!(reply.header("retry-after").is_none());
    assert_eq!(reply.json()["category"], "INTERNAL_ERROR");
    let reply = host
        .post_json("/crm/v3/objects/deals/search", &hs_deal_search(0, None))
        .await;
    assert_eq!(reply.status, 200);
    assert_eq!(reply.json()["total"], 1);

    // Zoho and Zenoti shapes.
    crm.fail_next("/crm/v5/", 429, Some(1), 1);
    crm.fail_next("/v1/", 503, None, 1);
    let reply = host.get("/crm/v5/Deals", &DEALS_QUERY, &[]).await;
    assert_eq!(
        (reply.status, reply.header("retry-after")),
        (429, Some("1"))
    );
    assert_eq!(reply.json()["code"], "TOO_MANY_REQUESTS");
    let reply = zenoti_week(&host, CENTER, "2025-12-01", "2025-12-07").await;
    assert_eq!(reply.status, 503);
    assert!(reply.json()["Message"].is_string());

    let statuses: Vec<u16> = crm.requests().iter().map(|l| l.status).collect();
    assert_eq!(statuses, [429, 429, 200, 200, 500, 200, 429, 503]);
}

/// The first deals search of a run.
async fn search(host: &Host) -> Reply {
    host.post_json("/crm/v3/objects/deals/search", &hs_deal_search(0, None))
        .await
}

#[tokio::test]
async fn credentials_are_checked_and_expire_after_n_successes() {
    let crm = FakeCrm::start().await;
    crm.seed_hubspot_deals(1);
    crm.accept_authorization(Some("Bearer tok-1"));
    let good = Host::new(&crm, Some("Bearer tok-1"));
    let wrong = Host::new(&crm, Some("Bearer tok-0"));
    let none = Host::new(&crm, None);

    for host in [&wrong, &none] {
        let reply = search(host).await;
        assert_eq!(reply.status, 401);
        assert_eq!(reply.json()["category"], "INVALID_AUTHENTICATION");
    }
    crm.expire_token_after(2);
    assert_eq!(search(&good).await.status, 200);
    // An answer of 400 or more is not a success: it does not count.
    let reply = good
        .post_json("/crm/v3/objects/deals/search", &json!({"limit": 500}))
        .await;
    assert_eq!(reply.status, 400);
    assert_eq!(search(&good).await.status, 200);
    for _ in 0..2 {
        let reply = search(&good).await;
        assert_eq!(reply.status, 401);
        assert_eq!(reply.json()["category"], "EXPIRED_AUTHENTICATION");
    }

    // A new credential works; the old one no longer.
    crm.accept_authorization(Some("Bearer tok-2"));
    let renewed = Host::new(&crm, Some("Bearer tok-2"));
    assert_eq!(search(&renewed).await.status, 200);
    assert_eq!(search(&good).await.status, 401);

    // Each provider's shape.
    crm.accept_authorization(Some("Bearer sf"));
    let reply = none
        .get(
            "/services/data/v59.0/queryAll",
            &[("q", &sf_soql(None))],
            &[],
        )
        .await;
    assert_eq!(reply.status, 401);
    assert_eq!(reply.json()[0]["errorCode"], "INVALID_SESSION_ID");

    crm.accept_authorization(Some("Zoho-oauthtoken z-1"));
    let zoho = Host::new(&crm, Some("Zoho-oauthtoken z-1"));
    let reply = none.get("/crm/v5/Deals", &DEALS_QUERY, &[]).await;
    assert_eq!(reply.status, 401);
    assert_eq!(reply.json()["code"], "AUTHENTICATION_FAILURE");
    crm.expire_token_after(1);
    assert_eq!(
        zoho.get("/crm/v5/Deals", &DEALS_QUERY, &[]).await.status,
        204
    );
    let reply = zoho.get("/crm/v5/Deals", &DEALS_QUERY, &[]).await;
    assert_eq!(reply.status, 401);
    assert_eq!(
        reply.json(),
        json!({"code": "INVALID_TOKEN", "details": {}, "message": "invalid oauth token",
               "status": "error"})
    );

    crm.accept_authorization(Some("apikey zk-1"));
    let reply = none
        .get("/v1/appointments", &[("center_id", CENTER)], &[])
        .await;
    assert_eq!(reply.status, 401);
    assert_eq!(
        reply.json(),
        json!({"Message": "Authorization has been denied for this request."})
    );

    // A credential in the query.
    crm.accept_query("api_key", Some("q-1"));
    let reply = none
        .get(
            "/v1/appointments",
            &[
                ("center_id", CENTER),
                ("start_date", "2025-12-01"),
                ("end_date", "2025-12-07"),
                ("api_key", "q-1"),
            ],
            &[],
        )
        .await;
    assert_eq!(reply.status, 200);
    assert_eq!(
        none.get("/v1/appointments", &[("api_key", "q-0")], &[])
            .await
            .status,
        401
    );

    // Anything goes again.
    crm.accept_authorization(None);
    assert_eq!(search(&wrong).await.status, 200);
}

#[tokio::test]
async fn delay_paces_answers_and_the_log_records_every_request() {
    let crm = FakeCrm::start().await;
    let host = Host::new(&crm, Some("Bearer tok-1"));
    crm.set_delay(Duration::from_millis(60));
    let started = Instant::now();
    let reply = host
        .post_json("/crm/v3/objects/deals/search", &hs_deal_search(5, None))
        .await;
    assert!(started.elapsed() >= Duration::from_millis(60));
    assert_eq!(reply.status, 200);
    assert_eq!(reply.json(), json!({"total": 0, "results": []}));
    crm.set_delay(Duration::ZERO);

    let reply = host
        .get(
            "/services/data/v59.0/queryAll",
            &[("q", "SELECT Id FROM Account")],
            &[],
        )
        .await;
    assert_eq!(reply.status, 200);
    let reply = host.get("/nowhere", &[], &[]).await;
    assert_eq!(reply.status, 404);

    let logged = crm.requests();
    assert_eq!(crm.count(), 3);
    assert_eq!(logged[0].method, "POST");
    assert_eq!(logged[0].path, "/crm/v3/objects/deals/search");
    assert_eq!(
        serde_json::from_slice::<Value>(&logged[0].body).unwrap(),
        hs_deal_search(5, None)
    );
    assert_eq!(logged[0].header("authorization"), Some("Bearer tok-1"));
    assert_eq!(logged[1].query, "q=SELECT+Id+FROM+Account");
    assert_eq!(
        logged.iter().map(|l| l.status).collect::<Vec<_>>(),
        [200, 200, 404]
    );
    assert!(logged[0].at <= logged[1].at && logged[1].at <= logged[2].at);
    assert_eq!(crm.requests_to("/services/").len(), 1);
    crm.reset_log();
    assert_eq!(crm.count(), 0);
    assert!(crm.requests().is_empty());
}

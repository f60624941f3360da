//! A route table that remembers what it routes: each service builds its `/api/v1` routes
//! through [`RouteTable`], so tests can walk every (method, path) the router serves — the
//! tenant test and the OpenAPI coverage test are generated from it, not from a hand list.

use std::sync::Arc;

use axum::{
    handler::Handler,
    http::Method,
    routing::{self, MethodRouter},
    Router,
};

use crate::context::AppContext;

/// One served route: method and full path template (`/api/v1/costs/{org_slug}`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteEntry {
    pub method: Method,
    pub path: String,
}

impl RouteEntry {
    /// Whether the route is scoped to the org named in its path.
    pub fn is_org_scoped(&self) -> bool {
        self.path.contains(&format!("{{{}}}", crate::auth::ORG_PATH_PARAM))
    }
}

/// Routes under one prefix, with the list of what was added.
pub struct RouteTable {
    prefix: &'static str,
    router: Router<Arc<AppContext>>,
    entries: Vec<RouteEntry>,
}

macro_rules! method {
    ($name:ident, $method:ident) => {
        pub fn $name<H, T>(self, path: &'static str, handler: H) -> Self
        where
            H: Handler<T, Arc<AppContext>>,
            T: 'static,
        {
            self.add(Method::$method, path, routing::$name(handler))
        }
    };
}

impl RouteTable {
    pub fn new(prefix: &'static str) -> Self {
        RouteTable {
            prefix,
            router: Router::new(),
            entries: Vec::new(),
        }
    }

    method!(get, GET);
    method!(post, POST);
    method!(put, PUT);
    method!(delete, DELETE);
    method!(patch, PATCH);

    fn add(mut self, method: Method, path: &'static str, route: MethodRouter<Arc<AppContext>>) -> Self {
        self.router = self.router.route(path, route);
        self.entries.push(RouteEntry {
            method,
            path: format!("{}{path}", self.prefix),
        });
        self
    }

    /// Adds every route of `other` (same prefix; no path may be in both).
    pub fn merge(mut self, other: RouteTable) -> Self {
        debug_assert_eq!(self.prefix, other.prefix, "route tables merge under one prefix");
        self.router = self.router.merge(other.router);
        self.entries.extend(other.entries);
        self
    }

    /// Every route added, in order.
    pub fn entries(&self) -> &[RouteEntry] {
        &self.entries
    }

    /// The router, nested under the prefix.
    pub fn into_router(self) -> Router<Arc<AppContext>> {
        Router::new().nest(self.prefix, self.router)
    }
}

//! The demo catalogue `ordermesh up` seeds on first start, so the README's
//! grpcurl walkthrough has something to order.

use crate::store::SeedItem;

/// Demo SKUs, priced in USD cents.
pub fn catalogue() -> Vec<SeedItem> {
    [
        ("KB-001", "Mechanical keyboard", 8999, 25),
        ("MS-002", "Wireless mouse", 2499, 50),
        ("MN-003", "27-inch monitor", 27900, 10),
        ("CB-004", "USB-C cable", 999, 200),
        ("LT-005", "Limited edition lamp", 14900, 1),
    ]
    .into_iter()
    .map(|(sku, name, price, stock)| SeedItem {
        sku: sku.into(),
        name: name.into(),
        unit_price_minor: price,
        currency_code: "USD".into(),
        initial_stock: stock,
    })
    .collect()
}

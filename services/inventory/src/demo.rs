//! The demo catalogue `ordermesh up` seeds on first start, so the grpcurl walkthrough
//! of docs/services.md has something to order.

use crate::store::SeedItem;

/// Demo SKUs, priced in USD cents, with a low-stock threshold each (the
/// lamp's alert fires when its one unit is ordered).
pub fn catalogue() -> Vec<SeedItem> {
    [
        ("KB-001", "Mechanical keyboard", 8999, 25, 5),
        ("MS-002", "Wireless mouse", 2499, 50, 10),
        ("MN-003", "27-inch monitor", 27900, 10, 2),
        ("CB-004", "USB-C cable", 999, 200, 20),
        ("LT-005", "Limited edition lamp", 14900, 1, 1),
    ]
    .into_iter()
    .map(|(sku, name, price, stock, threshold)| SeedItem {
        sku: sku.into(),
        name: name.into(),
        unit_price_minor: price,
        currency_code: "USD".into(),
        initial_stock: stock,
        low_stock_threshold: threshold,
    })
    .collect()
}

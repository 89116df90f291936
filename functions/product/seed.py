"""The demo catalog: 56 products in 7 categories, with stable ids so seeding is idempotent."""

from __future__ import annotations

import uuid

from functions.product.service import CatalogService

CATEGORIES: dict[str, list[tuple[str, int]]] = {
    "electronics": [
        ("Wireless Earbuds", 2999_00),
        ("Noise Cancelling Headphones", 14999_00),
        ("USB-C Charger 65W", 1899_00),
        ("Mechanical Keyboard", 5499_00),
        ("4K Monitor 27in", 27999_00),
        ("Bluetooth Speaker", 3499_00),
        ("Smart Watch", 8999_00),
        ("Portable SSD 1TB", 7999_00),
    ],
    "books": [
        ("Designing Data-Intensive Applications", 1899_00),
        ("The Pragmatic Programmer", 1499_00),
        ("Clean Architecture", 1299_00),
        ("Site Reliability Engineering", 1999_00),
        ("Kafka: The Definitive Guide", 2199_00),
        ("Learning Spark", 1799_00),
        ("Python Cookbook", 1599_00),
        ("Refactoring", 1699_00),
    ],
    "home": [
        ("Cast Iron Skillet", 1499_00),
        ("French Press", 999_00),
        ("Cotton Bedsheet Set", 1899_00),
        ("Ceramic Mug Set", 699_00),
        ("LED Desk Lamp", 1299_00),
        ("Chef Knife", 2499_00),
        ("Bamboo Cutting Board", 599_00),
        ("Air Purifier", 9999_00),
    ],
    "fashion": [
        ("Denim Jacket", 2999_00),
        ("Running Shoes", 4499_00),
        ("Linen Shirt", 1499_00),
        ("Leather Belt", 899_00),
        ("Wool Scarf", 1199_00),
        ("Canvas Backpack", 1999_00),
        ("Aviator Sunglasses", 2499_00),
        ("Cotton Socks 5-pack", 499_00),
    ],
    "sports": [
        ("Yoga Mat", 1299_00),
        ("Adjustable Dumbbells", 7999_00),
        ("Cricket Bat", 3499_00),
        ("Football", 999_00),
        ("Badminton Racket", 1799_00),
        ("Cycling Helmet", 2299_00),
        ("Resistance Bands", 699_00),
        ("Water Bottle 1L", 499_00),
    ],
    "grocery": [
        ("Darjeeling Tea 250g", 549_00),
        ("Arabica Coffee Beans 1kg", 1299_00),
        ("Basmati Rice 5kg", 899_00),
        ("Cold Pressed Olive Oil", 1099_00),
        ("Dark Chocolate", 249_00),
        ("Mixed Nuts 500g", 799_00),
        ("Organic Honey", 449_00),
        ("Masala Chai Mix", 299_00),
    ],
    "toys": [
        ("Building Blocks Set", 2499_00),
        ("Remote Control Car", 1999_00),
        ("Jigsaw Puzzle 1000", 799_00),
        ("Plush Elephant", 699_00),
        ("Chess Set", 1499_00),
        ("Kite", 299_00),
        ("Science Kit", 1799_00),
        ("Board Game Night", 1299_00),
    ],
}

_NAMESPACE = uuid.UUID("5f1f4b8e-3d0e-4c1a-9b5e-6f7d8c9e0a1b")


def demo_products() -> list[dict[str, object]]:
    items = []
    for category, entries in CATEGORIES.items():
        for index, (name, price) in enumerate(entries):
            items.append(
                {
                    "product_id": str(uuid.uuid5(_NAMESPACE, f"{category}/{name}")),
                    "name": name,
                    "description": f"{name} from the cloudshop {category} collection.",
                    "category": category,
                    "price_amount": price,
                    "stock": 50 + 25 * (index % 4),
                }
            )
    return items


def seed_catalog(catalog: CatalogService) -> int:
    """Seed once: an empty catalog gets the demo products; a catalog with anything in it is left alone."""
    if catalog.products.count() > 0:
        return 0
    for item in demo_products():
        catalog.create(currency=None, **item)  # type: ignore[arg-type]
    return len(demo_products())

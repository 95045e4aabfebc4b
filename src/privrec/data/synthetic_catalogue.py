"""The demo shop's catalogue generator: readable products with hidden traits for the shoppers.

21 leaf categories in 8 departments ("Grocery > Tea"), brands tied to departments plus one house
brand, titles "brand + adjective + product + variant" ("Lumen Organic Green Tea 100g"), log-normal
prices per category scaled by brand and adjective, ~6% out of stock, a Zipf popularity per item
and a hidden 6-dimensional style vector per item. `generate_catalogue` returns the public
catalogue and the hidden traits that `privrec.data.synthetic` simulates shoppers against.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

__all__ = ["STYLE_DIM", "brand_names", "generate_catalogue"]

# category path -> (product nouns, variants, median price, log-price sigma)
_CATEGORIES: dict[str, tuple[list[str], list[str], float, float]] = {
    "Grocery > Tea": (
        [
            "Green Tea",
            "Black Tea",
            "Chamomile Tea",
            "Earl Grey Tea",
            "Matcha Powder",
            "Oolong Tea",
            "Peppermint Tea",
            "Rooibos Tea",
        ],
        ["100g", "250g", "20 Bags", "50 Bags", "500g"],
        7.0,
        0.45,
    ),
    "Grocery > Coffee": (
        [
            "Ground Coffee",
            "Whole Bean Coffee",
            "Espresso Beans",
            "Instant Coffee",
            "Cold Brew Blend",
            "Decaf Coffee",
        ],
        ["250g", "500g", "1kg", "10 Pods", "30 Pods"],
        11.0,
        0.45,
    ),
    "Grocery > Snacks": (
        [
            "Almonds",
            "Trail Mix",
            "Dark Chocolate Bar",
            "Granola",
            "Rice Crackers",
            "Protein Bar",
            "Dried Mango",
        ],
        ["100g", "200g", "Pack of 6", "Pack of 12", "500g"],
        5.0,
        0.5,
    ),
    "Grocery > Pantry": (
        [
            "Olive Oil",
            "Pasta Sauce",
            "Basmati Rice",
            "Honey",
            "Maple Syrup",
            "Peanut Butter",
            "Balsamic Vinegar",
        ],
        ["250ml", "500ml", "1L", "340g", "1kg"],
        8.0,
        0.5,
    ),
    "Beauty > Skincare": (
        [
            "Face Cream",
            "Cleanser",
            "Serum",
            "Sunscreen SPF 50",
            "Night Cream",
            "Eye Gel",
            "Face Mask",
        ],
        ["30ml", "50ml", "100ml", "150ml", "Travel Size"],
        18.0,
        0.6,
    ),
    "Beauty > Hair Care": (
        ["Shampoo", "Conditioner", "Hair Oil", "Styling Gel", "Hair Mask", "Dry Shampoo"],
        ["200ml", "300ml", "500ml", "Duo Pack"],
        10.0,
        0.5,
    ),
    "Beauty > Makeup": (
        ["Lipstick", "Mascara", "Foundation", "Eyeliner", "Blush", "Nail Polish", "Concealer"],
        ["Ruby", "Nude", "Coral", "Plum", "Black", "Ivory", "Sand"],
        12.0,
        0.55,
    ),
    "Home > Kitchen": (
        [
            "Chef Knife",
            "Frying Pan",
            "Cutting Board",
            "Mixing Bowl Set",
            "French Press",
            "Kettle",
            "Spice Rack",
            "Baking Tray",
        ],
        ["20cm", "24cm", "28cm", "Set of 3", "1.7L", "Large"],
        30.0,
        0.6,
    ),
    "Home > Bedding": (
        [
            "Duvet Cover",
            "Pillow",
            "Fitted Sheet",
            "Throw Blanket",
            "Mattress Topper",
            "Pillowcase Set",
        ],
        ["Single", "Double", "King", "Queen", "Set of 2"],
        40.0,
        0.55,
    ),
    "Home > Decor": (
        [
            "Scented Candle",
            "Picture Frame",
            "Table Lamp",
            "Wall Clock",
            "Vase",
            "Cushion Cover",
            "Plant Pot",
        ],
        ["Small", "Medium", "Large", "Set of 2", "White", "Grey", "Sage"],
        22.0,
        0.6,
    ),
    "Electronics > Audio": (
        [
            "Wireless Earbuds",
            "Bluetooth Speaker",
            "Over-Ear Headphones",
            "Soundbar",
            "Portable Radio",
        ],
        ["Black", "White", "Navy", "Gen 2", "Mini"],
        60.0,
        0.7,
    ),
    "Electronics > Phone Accessories": (
        [
            "Phone Case",
            "USB-C Cable",
            "Wireless Charger",
            "Power Bank",
            "Screen Protector",
            "Car Mount",
        ],
        ["1m", "2m", "10000mAh", "20000mAh", "Clear", "Black", "2-Pack"],
        15.0,
        0.55,
    ),
    "Electronics > Computer Accessories": (
        [
            "Wireless Mouse",
            "Mechanical Keyboard",
            "USB Hub",
            "Laptop Stand",
            "Webcam",
            "Monitor Light",
        ],
        ["Black", "Silver", "Compact", "Full Size", "1080p", "4K"],
        35.0,
        0.6,
    ),
    "Sports > Fitness": (
        ["Yoga Mat", "Dumbbell Set", "Resistance Bands", "Kettlebell", "Foam Roller", "Jump Rope"],
        ["4mm", "6mm", "5kg", "10kg", "Set of 5", "Light", "Heavy"],
        25.0,
        0.6,
    ),
    "Sports > Outdoor": (
        [
            "Hiking Backpack",
            "Water Bottle",
            "Camping Lantern",
            "Trekking Poles",
            "Sleeping Bag",
            "Rain Jacket",
        ],
        ["20L", "35L", "750ml", "1L", "3-Season", "M", "L"],
        35.0,
        0.7,
    ),
    "Fashion > Shoes": (
        ["Running Shoes", "Sneakers", "Hiking Boots", "Slippers", "Sandals", "Loafers"],
        ["Size 38", "Size 40", "Size 42", "Size 44", "Black", "White"],
        55.0,
        0.5,
    ),
    "Fashion > Bags": (
        ["Tote Bag", "Backpack", "Crossbody Bag", "Wallet", "Duffel Bag", "Laptop Sleeve"],
        ["Black", "Tan", "Olive", "Navy", "Canvas", "Leather"],
        35.0,
        0.6,
    ),
    "Toys > Board Games": (
        ["Strategy Game", "Party Game", "Jigsaw Puzzle", "Card Game", "Family Quiz Game"],
        ["Classic Edition", "Travel Edition", "Deluxe Edition", "1000 Pieces"],
        25.0,
        0.45,
    ),
    "Toys > Building Sets": (
        ["Building Blocks", "Construction Set", "Marble Run", "Robot Kit", "Castle Set"],
        ["100 Pieces", "250 Pieces", "500 Pieces", "Starter", "Advanced"],
        30.0,
        0.6,
    ),
    "Pets > Dog Supplies": (
        ["Dog Food", "Chew Toy", "Dog Bed", "Leash", "Dog Treats", "Grooming Brush"],
        ["2kg", "5kg", "Small", "Medium", "Large", "Pack of 3"],
        20.0,
        0.6,
    ),
    "Pets > Cat Supplies": (
        ["Cat Food", "Cat Litter", "Scratching Post", "Cat Toy Set", "Cat Treats", "Cat Bed"],
        ["1.5kg", "4kg", "10L", "Small", "Large", "Pack of 6"],
        15.0,
        0.6,
    ),
}

_ADJECTIVES: dict[str, list[str]] = {
    "Grocery": [
        "Organic",
        "Fair Trade",
        "Premium",
        "Classic",
        "Everyday",
        "Artisan",
        "Wholesome",
        "Single Origin",
    ],
    "Beauty": [
        "Hydrating",
        "Gentle",
        "Radiant",
        "Nourishing",
        "Sensitive",
        "Natural",
        "Vitamin C",
        "Matte",
    ],
    "Home": ["Classic", "Modern", "Nordic", "Rustic", "Soft", "Premium", "Minimalist", "Cosy"],
    "Electronics": [
        "Wireless",
        "Pro",
        "Ultra",
        "Compact",
        "Fast",
        "Smart",
        "Noise-Cancelling",
        "Slim",
    ],
    "Sports": [
        "Pro",
        "Lightweight",
        "Eco",
        "Durable",
        "Non-Slip",
        "Performance",
        "Trail",
        "All-Weather",
    ],
    "Fashion": [
        "Classic",
        "Urban",
        "Vegan Leather",
        "Canvas",
        "Everyday",
        "Lightweight",
        "Retro",
        "Waterproof",
    ],
    "Toys": ["Classic", "Junior", "Creative", "Deluxe", "Explorer", "Family", "Mini", "Magnetic"],
    "Pets": ["Grain-Free", "Natural", "Durable", "Cosy", "Premium", "Playful", "Senior", "Puppy"],
}
_PREMIUM_WORDS = {
    "Premium",
    "Pro",
    "Ultra",
    "Deluxe",
    "Artisan",
    "Single Origin",
    "Noise-Cancelling",
    "Vegan Leather",
}

_BRANDS: dict[str, list[str]] = {
    "Grocery": ["Lumen", "Verdant", "Alpenhof", "Golden Hive", "Maple & Moss", "Harvest Table"],
    "Beauty": ["Solace", "Aurora", "Petal & Pine", "Lustra", "Dermaleaf"],
    "Home": ["Nordhaus", "Hearthly", "Linenfold", "Oakridge", "Casa Luma"],
    "Electronics": ["Voltix", "Sonara", "Kestrel", "Pixelon", "Ampere"],
    "Sports": ["Ironclad", "Trailhead", "Summit Gear", "Flexa", "Bluefin"],
    "Fashion": ["Urbane", "Cobalt & Co", "Driftwood", "Stride"],
    "Toys": ["Brickly", "Playmaker", "Tinker Town", "Quill & Quest"],
    "Pets": ["Pawsome", "Whisker", "Barkley"],
}
_HOUSE_BRAND = "Nimbus"


STYLE_DIM = 6  # length of the hidden style vectors of items and shoppers


def _price(p: float) -> float:
    """Shop-style price: whole units + .99, at least 0.99."""
    return float(max(0.99, np.floor(p) + 0.99))


def brand_names() -> list[str]:
    """Every brand, sorted: a brand's index in this list is its code in the hidden traits."""
    return sorted({b for bs in _BRANDS.values() for b in bs} | {_HOUSE_BRAND})


def generate_catalogue(
    n_items: int, rng: np.random.Generator
) -> tuple[pd.DataFrame, dict[str, np.ndarray]]:
    """Draw `n_items` products, grouped by category.

    Args:
        n_items: products in the catalogue.
        rng: the catalogue's own generator (so the catalogue depends only on n_items and seed).

    Returns:
        (catalogue, hidden). catalogue: one row per item with item, title, category, brand,
        price, in_stock, text. hidden: per-item arrays the shoppers are simulated against
        (category and brand codes, log popularity, style vectors, relative log price, title
        words, stock) and per-category / per-brand facts (counts, departments).
    """
    cats = list(_CATEGORIES)
    # Category sizes are uneven (a few big ones), like a real shop.
    cat_w = rng.dirichlet(np.full(len(cats), 3.0))
    cat_of = np.sort(rng.choice(len(cats), size=n_items, p=cat_w))  # items grouped by category
    brands = brand_names()
    brand_id = {b: i for i, b in enumerate(brands)}
    brand_premium = rng.normal(0.0, 0.25, size=len(brands))
    rows = []
    seen: set[str] = set()
    brand_of = np.empty(n_items, dtype=np.int64)
    log_rel_price = np.empty(n_items)
    noun_of: list[str] = []
    adj_of: list[str] = []
    variant_of: list[str] = []
    for i in range(n_items):
        cat = cats[cat_of[i]]
        dept = cat.split(" > ")[0]
        nouns, variants, median, sigma = _CATEGORIES[cat]
        for attempt in range(20):
            brand = _HOUSE_BRAND if rng.random() < 0.12 else str(rng.choice(_BRANDS[dept]))
            adj = str(rng.choice(_ADJECTIVES[dept])) if rng.random() < 0.75 else ""
            noun = str(rng.choice(nouns))
            variant = str(rng.choice(variants))
            title = " ".join(x for x in (brand, adj, noun, variant) if x)
            if attempt == 19:
                title += f" Series {i}"
            if title not in seen:
                break
        seen.add(title)
        rel = (
            brand_premium[brand_id[brand]]
            + (0.3 if adj in _PREMIUM_WORDS else 0.0)
            + rng.normal(0.0, sigma * 0.6)
        )
        price = _price(median * float(np.exp(rel)))
        brand_of[i] = brand_id[brand]
        log_rel_price[i] = np.log(price / median)
        noun_of.append(noun)
        adj_of.append(adj)
        variant_of.append(variant)
        rows.append(
            {
                "item": f"sku-{i:06d}",
                "title": title,
                "category": cat,
                "brand": brand,
                "price": price,
                "in_stock": bool(rng.random() > 0.06),
                "text": f"{title}. {cat}. {brand}.",
            }
        )
    catalogue = pd.DataFrame(rows)
    rank = rng.permutation(n_items)
    hidden = {
        "cat": cat_of,
        "brand": brand_of,
        "log_pop": -0.9 * np.log1p(rank),  # Zipf popularity
        "style": rng.normal(0.0, 1.0, size=(n_items, STYLE_DIM)),
        "log_rel_price": log_rel_price,
        "noun": np.array(noun_of, dtype=object),
        "adj": np.array(adj_of, dtype=object),
        "variant": np.array(variant_of, dtype=object),
        "in_stock": catalogue["in_stock"].to_numpy(bool),
        "n_cats": np.array(len(cats)),
        "n_brands": np.array(len(brands)),
        "brand_dept": np.array(
            [next((d for d, bs in _BRANDS.items() if b in bs), "*") for b in brands], dtype=object
        ),
        "cat_dept": np.array([c.split(" > ")[0] for c in cats], dtype=object),
    }
    return catalogue, hidden

"""Key lifecycle: which key an owner signs with now, and which keys stay published."""

"""Federation (跨省通办): province nodes that trust each other's keys and forward pulls."""

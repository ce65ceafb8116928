"""Import and export of the formats teams already hold: MVTec AD, COCO, Label Studio."""

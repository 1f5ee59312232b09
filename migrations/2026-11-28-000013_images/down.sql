DROP TABLE image_aliases;
DROP TABLE images;

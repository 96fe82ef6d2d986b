"""Data from MAST: list a program's uncal products (astroquery) and download them safely."""

from webbflow.download.fetch import DownloadError, download, verify_file
from webbflow.download.mast import MAST_URL, Product, download_url, list_products, products_from_table

__all__ = ["MAST_URL", "DownloadError", "Product", "download", "download_url", "list_products",
           "products_from_table", "verify_file"]

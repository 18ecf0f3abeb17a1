-- os.exit works: the status is the script's.
os.exit(3)

"""Screenshots of the explorer's five tabs for the README (docs/explorer-*.png).

    python docs/screenshots.py RUN [--out docs]

Starts ``cli.py serve RUN`` on a free port and drives Debian's headless Chromium with selenium.
"""

import argparse
import os
import subprocess
import sys
import time

from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("run", help="A trained run directory (a PTB run for the README).")
    p.add_argument("--out", default=os.path.join(ROOT, "docs"), help="Folder for explorer-TAB.png.")
    p.add_argument("--chromium", default="/usr/bin/chromium", help="The Chromium binary.")
    p.add_argument("--chromedriver", default="/usr/bin/chromedriver", help="Its ChromeDriver.")
    args = p.parse_args()
    server = subprocess.Popen([sys.executable, os.path.join(ROOT, "cli.py"), "serve", args.run, "--port", "0"],
                              stderr=subprocess.PIPE, text=True)
    url = server.stderr.readline().split(" at ")[1].split()[0]
    options = webdriver.ChromeOptions()
    options.binary_location = args.chromium
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--window-size=1200,820"):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(args.chromedriver), options=options)
    wait = WebDriverWait(driver, 120)
    try:
        driver.get(url)
        wait.until(lambda d: d.find_element(By.TAG_NAME, "body").get_attribute("data-ready") == "yes")

        def tab(name, button=None, result=None):
            driver.find_element(By.CSS_SELECTOR, f"[data-tab={name}]").click()
            if button:
                driver.find_element(By.ID, button).click()
                wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, f"#{result} li"))
            time.sleep(0.3)
            driver.save_screenshot(os.path.join(args.out, f"explorer-{name}.png"))

        def reranked_beam(form, width=10):  # a beam of 10 (the most one request takes), reranked
            driver.find_element(By.CSS_SELECTOR, f"#{form} [name=strategy]").send_keys("beam")
            box = driver.find_element(By.CSS_SELECTOR, f"#{form} [name=beam]")
            box.clear()
            box.send_keys(str(width))
            driver.find_element(By.CSS_SELECTOR, f"#{form} [name=rerank]").click()

        driver.find_element(By.CSS_SELECTOR, "[data-tab=homotopy]").click()
        reranked_beam("homotopy-form")
        tab("homotopy", "run-homotopy", "homotopy-out")  # the page's two example sentences
        points = driver.find_elements(By.CSS_SELECTOR, "#map-plot circle.point")
        driver.find_element(By.CSS_SELECTOR, "[data-tab=map]").click()
        webdriver.ActionChains(driver).move_to_element(points[7]).perform()
        tab("map")
        driver.find_element(By.CSS_SELECTOR, "[data-tab=posterior]").click()
        reranked_beam("posterior-form")
        tab("posterior", "run-posterior", "posterior-out")
        driver.find_element(By.CSS_SELECTOR, "[data-tab=prior]").click()
        driver.find_element(By.CSS_SELECTOR, "#sample-form [name=strategy]").send_keys("beam")
        tab("prior", "run-sample", "sample-out")
        tab("training")
    finally:
        driver.quit()
        server.terminate()


if __name__ == "__main__":
    main()

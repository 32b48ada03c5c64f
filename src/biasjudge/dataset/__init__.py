"""The dataset build: the data and label stages run as jobs with their files (:mod:`.stages`),
the whole build (:mod:`.build`), and the training rows made of labelled pairs (:mod:`.rows`).
"""

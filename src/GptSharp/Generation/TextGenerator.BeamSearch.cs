namespace GptSharp.Generation;

public sealed partial class TextGenerator
{
    /// <summary>
    /// Beam search (as Hugging Face's <c>num_beams</c>): keep the <c>NumBeams</c> most probable continuations
    /// by summed log-probability; a beam that produces the EOS id becomes a finished hypothesis scored
    /// sum / length^LengthPenalty, where length counts the generated tokens, the EOS included. Returns the best
    /// finished hypothesis (or running beam, at the token limit) without the EOS id, prompt first.
    /// </summary>
    /// <remarks>
    /// Stops when <c>maxNewTokens</c> are generated, or — with an EOS id — once NumBeams hypotheses are finished and
    /// either <see cref="GenerationOptions.EarlyStopping"/> is set or no running beam can still beat the worst of
    /// them (Hugging Face's heuristic, judged at the current length). The logits processors (penalties, top-k,
    /// top-p, min-p) apply to each beam's logits before the log-softmax.
    /// </remarks>
    private int[] BeamSearch(int[] prompt, int maxNewTokens)
    {
        int beams = Options.NumBeams, promptLength = prompt.Length;
        if (maxNewTokens < 0) throw new ArgumentException($"maxNewTokens must be ≥ 0, got {maxNewTokens}.");
        if (promptLength == 0) throw new ArgumentException("the prompt is empty.");
        if (!Options.Slide && promptLength > ContextSize)
            throw new ArgumentException($"the prompt has {promptLength} tokens, more than the context length {ContextSize} (and sliding is off).");
        foreach (int id in prompt)
            if ((uint)id >= (uint)_vocabSize) throw new ArgumentException($"token id {id} is outside the vocabulary (0..{_vocabSize - 1}).");

        if (Options.UseCache) PrepareCache(beams);
        _cacheValid = false;
        LastStopReason = StopReason.MaxNewTokens;

        int capacity = promptLength + maxNewTokens;
        var tokens = new int[beams * capacity];
        var nextTokens = new int[beams * capacity];
        for (int r = 0; r < beams; r++) prompt.CopyTo(tokens, r * capacity);
        // Only beam 0 is live at first: the others are copies of it and would only duplicate its candidates.
        var scores = new double[beams];
        var nextScores = new double[beams];
        for (int r = 1; r < beams; r++) scores[r] = double.NegativeInfinity;
        var sources = new int[beams];

        int candidateCount = 2 * beams; // enough to find `beams` continuations even if `beams` of them end with EOS
        var candidateScore = new double[candidateCount];
        var candidateBeam = new int[candidateCount];
        var candidateToken = new int[candidateCount];
        var logProbabilities = new float[_vocabSize];
        var finished = new List<(double Score, int[] Ids)>();
        int length = promptLength;

        for (int step = 0; step < maxNewTokens; step++)
        {
            if (!Options.Slide && length >= ContextSize) { LastStopReason = StopReason.ContextFull; break; }
            RunModel(tokens, capacity, beams, length);

            int found = 0;
            for (int r = 0; r < beams; r++)
            {
                if (double.IsNegativeInfinity(scores[r])) continue;
                var logits = _logits.AsSpan();
                LogitsRow(r).CopyTo(logits);
                _pipeline.Process(tokens.AsSpan(r * capacity, length), promptLength, logits);
                Sampling.LogSoftmax(logits, logProbabilities);
                for (int v = 0; v < _vocabSize; v++)
                {
                    double candidate = scores[r] + logProbabilities[v];
                    if (double.IsNegativeInfinity(candidate)) continue;
                    if (found == candidateCount && !(candidate > candidateScore[found - 1])) continue;
                    // Insertion into the short list, best first.
                    int at = found == candidateCount ? found - 1 : found++;
                    while (at > 0 && candidateScore[at - 1] < candidate)
                    {
                        candidateScore[at] = candidateScore[at - 1];
                        candidateBeam[at] = candidateBeam[at - 1];
                        candidateToken[at] = candidateToken[at - 1];
                        at--;
                    }
                    candidateScore[at] = candidate;
                    candidateBeam[at] = r;
                    candidateToken[at] = v;
                }
            }

            int kept = 0;
            for (int rank = 0; rank < found && kept < beams; rank++)
            {
                int beam = candidateBeam[rank], token = candidateToken[rank];
                if (token == Options.EosId)
                {
                    // An EOS outside the best `beams` candidates would not have been a beam either.
                    if (rank >= beams) continue;
                    int generated = length + 1 - promptLength;
                    AddHypothesis(finished, beams, candidateScore[rank] / Math.Pow(generated, Options.LengthPenalty),
                        tokens.AsSpan(beam * capacity, length));
                    continue;
                }
                sources[kept] = beam;
                nextScores[kept] = candidateScore[rank];
                tokens.AsSpan(beam * capacity, length).CopyTo(nextTokens.AsSpan(kept * capacity));
                nextTokens[kept * capacity + length] = token;
                kept++;
            }
            // Fewer live candidates than beams (a tiny vocabulary, or everything masked): pad with dead beams.
            for (int r = kept; r < beams; r++)
            {
                sources[r] = kept > 0 ? sources[0] : 0;
                nextScores[r] = double.NegativeInfinity;
                nextTokens.AsSpan(0, length + 1).CopyTo(nextTokens.AsSpan(r * capacity));
            }
            (tokens, nextTokens) = (nextTokens, tokens);
            (scores, nextScores) = (nextScores, scores);
            if (Options.UseCache) _cacheRows.Reorder(_cache!, sources);
            length++;

            if (kept == 0) { LastStopReason = StopReason.EndOfSequence; break; }
            if (Options.EosId is not null && finished.Count >= beams)
            {
                double bestRunning = scores.Max() / Math.Pow(length - promptLength, Options.LengthPenalty);
                if (Options.EarlyStopping || bestRunning <= finished[^1].Score)
                {
                    LastStopReason = StopReason.EndOfSequence;
                    return finished[0].Ids;
                }
            }
        }

        // The token limit (or the context) ended the search: running beams compete with the finished hypotheses.
        int generatedLength = length - promptLength;
        for (int r = 0; r < beams; r++)
        {
            if (double.IsNegativeInfinity(scores[r])) continue;
            double score = generatedLength == 0 ? scores[r] : scores[r] / Math.Pow(generatedLength, Options.LengthPenalty);
            AddHypothesis(finished, beams, score, tokens.AsSpan(r * capacity, length));
        }
        return finished.Count > 0 ? finished[0].Ids : prompt;
    }

    /// <summary>Keeps the <paramref name="limit"/> best hypotheses, best first.</summary>
    private static void AddHypothesis(List<(double Score, int[] Ids)> finished, int limit, double score, ReadOnlySpan<int> ids)
    {
        if (finished.Count == limit && !(score > finished[^1].Score)) return;
        int at = 0;
        while (at < finished.Count && finished[at].Score >= score) at++;
        finished.Insert(at, (score, ids.ToArray()));
        if (finished.Count > limit) finished.RemoveAt(finished.Count - 1);
    }
}
